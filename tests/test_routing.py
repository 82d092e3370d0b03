"""The routing policy, table-driven: which items escalate, why, and who gets a holding line."""

from dataclasses import replace

import pytest

from producers.client import build_submission
from stream.reasons import RouteReason
from stream.routing import ItemFeatures, RoutingPolicy, decide_route, item_features, item_priority

POLICY = RoutingPolicy()
LETTER = "Dear Mirai, " + "thank you for every stream this year, it kept me going. " * 4


def features(text=None, kind="fan_image", coverage=0.0) -> ItemFeatures:
    sub = build_submission(
        room="r", user_id="u", display_name="Fan", image_bytes=b"xxxx", mime="image/png", kind=kind, text=text
    )
    return item_features(sub, coverage)


@pytest.mark.parametrize(
    ("text", "kind", "coverage", "verdict", "route", "reason"),
    [
        ("I drew you with Mochi!", "fan_image", 0.05, False, "fast", RouteReason.SIMPLE),
        (None, "fan_image", 0.0, False, "fast", RouteReason.SIMPLE),
        ("how are you?", "fan_image", 0.0, False, "fast", RouteReason.SIMPLE),  # small talk
        ("Can you solve 12 + 30 x 2 for me?", "fan_image", 0.0, False, "deep", RouteReason.MATHS),
        ("what is the square root of my homework", "fan_image", 0.0, False, "deep", RouteReason.MATHS),
        ("这道题等于多少", "fan_image", 0.0, False, "deep", RouteReason.MATHS),
        (LETTER, "fan_image", 0.0, False, "deep", RouteReason.LONG_TEXT),
        (None, "danmaku_screenshot", 0.75, False, "deep", RouteReason.DENSE_SCREENSHOT),
        (None, "danmaku_screenshot", 0.3, False, "fast", RouteReason.SIMPLE),
        (None, "danmaku_screenshot", None, False, "fast", RouteReason.SIMPLE),  # coverage not measured
        (None, "fan_image", 0.9, False, "fast", RouteReason.SIMPLE),  # a busy drawing is not a comment wall
        ("Which outfit from the summer live do you like best?", "fan_image", 0.0, False, "deep", RouteReason.QUESTION),
        ("Mochi!!", "fan_image", 0.0, True, "deep", RouteReason.MODEL_VERDICT),
        ("Can you solve 2 + 2?", "fan_image", 0.0, True, "deep", RouteReason.MATHS),  # features outrank the verdict
    ],
)
def test_route_and_reason(text, kind, coverage, verdict, route, reason):
    decision = decide_route(features(text, kind, coverage), verdict, POLICY)
    assert (decision.route, decision.reason) == (route, reason)
    assert decision.hold == (route == "deep")


@pytest.mark.parametrize(
    ("change", "text", "kind", "coverage", "verdict", "route", "reason"),
    [
        ({"escalate": False}, "Can you solve 12 + 30?", "fan_image", 0.0, False, "fast", RouteReason.MATHS),
        ({"trust_model_verdict": False}, "Mochi!!", "fan_image", 0.0, True, "fast", RouteReason.SIMPLE),
        ({"long_text_chars": 20}, "a fairly long caption here", "fan_image", 0.0, False, "deep", RouteReason.LONG_TEXT),
        ({"dense_text_coverage": 0.2}, None, "danmaku_screenshot", 0.3, False, "deep", RouteReason.DENSE_SCREENSHOT),
        ({"question_min_chars": 5}, "how are you?", "fan_image", 0.0, False, "deep", RouteReason.QUESTION),
    ],
)
def test_thresholds_come_from_the_policy(change, text, kind, coverage, verdict, route, reason):
    decision = decide_route(features(text, kind, coverage), verdict, replace(POLICY, **change))
    assert (decision.route, decision.reason) == (route, reason)


def test_holding_lines_only_for_the_configured_reasons():
    policy = replace(POLICY, hold_for=frozenset({RouteReason.LONG_TEXT}))
    assert decide_route(features(LETTER), False, policy).hold
    assert not decide_route(features("Can you solve 1 + 1?"), False, policy).hold


def test_a_fan_who_asked_something_outranks_a_bare_screenshot():
    asked = item_priority(features("What is 3 + 4?"))
    wrote = item_priority(features("nice!"))
    bare = item_priority(features(None, "danmaku_screenshot"))
    assert asked > wrote > bare


@pytest.mark.parametrize(
    ("text", "draw_verdict", "policy", "route", "reason"),
    [
        ("Draw me with my cat!", False, POLICY, "draw", RouteReason.DRAW_REQUEST),
        ("画一个我和你一起看星星", False, POLICY, "draw", RouteReason.DRAW_REQUEST),
        ("猫と私を描いて!", False, POLICY, "draw", RouteReason.DRAW_REQUEST),
        # A drawing request outranks every reason to think: the fan asked for a picture.
        ("Can you draw 12 + 30 as a cake? " + LETTER, False, POLICY, "draw", RouteReason.DRAW_REQUEST),
        ("I drew this for you!", False, POLICY, "fast", RouteReason.SIMPLE),  # their own drawing
        ("Mochi!!", True, POLICY, "draw", RouteReason.DRAW_VERDICT),  # the model heard a request
        (None, True, POLICY, "fast", RouteReason.SIMPLE),  # no words, no request: the model misread the picture
        ("Mochi!!", True, RoutingPolicy(trust_model_verdict=False), "fast", RouteReason.SIMPLE),
        ("Draw me with my cat!", False, RoutingPolicy(draw=False), "fast", RouteReason.SIMPLE),
        ("Draw me with my cat!", True, RoutingPolicy(draw=False), "fast", RouteReason.SIMPLE),
        # Drawing off, but the item still escalates for its own reasons.
        ("Can you draw 12 + 30?", False, RoutingPolicy(draw=False), "deep", RouteReason.MATHS),
    ],
)
def test_drawing_requests_route_to_the_draw_tier_with_a_holding_line(text, draw_verdict, policy, route, reason):
    decision = decide_route(features(text), False, policy, draw_verdict)
    assert (decision.route, decision.reason) == (route, reason)
    assert decision.hold == (route != "fast")
