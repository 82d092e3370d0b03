"""Routing policy: does the fast model's answer go out, does the item escalate to the deep tier,
or does she draw what the fan asked for?

Pure and deterministic. `item_features` reads what can be read without a model (kind,
text length, question and maths patterns, how much of a screenshot is covered by text,
a request that she draw, `stream.draw.routing`); `decide_route` combines those with the
fast model's own verdicts (it is prompted to tag items that need thought, and requests to
draw) under a `RoutingPolicy` whose thresholds come from settings. A drawing request wins
over every reason to think: the fan asked for a picture, not an essay. Every decision
carries its reason, which goes on the reply and into a metric label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from stream.draw.routing import DrawAsk, draw_request
from stream.reasons import ESCALATION_REASONS, RouteReason

if TYPE_CHECKING:
    from stream.contracts import Submission


_MATHS = re.compile(
    r"\d\s*[-+*/×÷^=]\s*\d"  # 12 + 30, 3x=9 is not caught but 3*3 is
    r"|\b(?:solve|equation|calculate|integral|derivative|plus|minus|times|divided by|square root)\b"
    r"|[=＝]\s*[?？]"
    r"|等于|加上|减去|乘以|除以|计算|方程",
    re.IGNORECASE,
)
_QUESTION = re.compile(
    r"[?？]"
    r"|^\s*(?:what|why|how|who|which|when|where|can you|could you|do you|would you|is it|are you)\b"
    r"|吗|什么|为什么|怎么|多少|なに|なぜ|どう",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class RoutingPolicy:
    """Thresholds for escalation; `escalate=False` keeps every item on the fast tier."""

    escalate: bool = True
    long_text_chars: int = 160
    question_min_chars: int = 24  # "how are you?" is small talk; a longer question wants thought
    dense_text_coverage: float = 0.5  # share of a screenshot covered by text (stream.images.text_coverage)
    trust_model_verdict: bool = True
    hold_for: frozenset[RouteReason] = ESCALATION_REASONS  # reasons that get a holding line at once
    draw: bool = True  # send drawing requests to the draw tier (False: the fast model answers them)


@dataclass(frozen=True)
class ItemFeatures:
    kind: str
    text_chars: int
    has_question: bool
    has_maths: bool
    text_coverage: float | None  # 0..1, see stream.images.text_coverage; None when not measured
    draw_ask: DrawAsk | None = None  # the fan's words ask her to draw this


@dataclass(frozen=True)
class RouteDecision:
    route: Literal["fast", "deep", "draw"]
    reason: RouteReason
    hold: bool  # send a holding line to the overlay while the deep or draw tier works


def item_features(submission: Submission, text_coverage: float | None) -> ItemFeatures:
    text = (submission.text or "").strip()
    return ItemFeatures(
        kind=submission.kind,
        text_chars=len(text),
        has_question=bool(_QUESTION.search(text)),
        has_maths=bool(_MATHS.search(text)),
        text_coverage=text_coverage,
        draw_ask=draw_request(text),
    )


def _wanted_reason(features: ItemFeatures, model_wants_deep: bool, policy: RoutingPolicy) -> RouteReason:
    if features.has_maths:
        return RouteReason.MATHS
    if features.text_chars >= policy.long_text_chars:
        return RouteReason.LONG_TEXT
    coverage = features.text_coverage
    if features.kind == "danmaku_screenshot" and coverage is not None and coverage >= policy.dense_text_coverage:
        return RouteReason.DENSE_SCREENSHOT
    if features.has_question and features.text_chars >= policy.question_min_chars:
        return RouteReason.QUESTION
    if model_wants_deep and policy.trust_model_verdict:
        return RouteReason.MODEL_VERDICT
    return RouteReason.SIMPLE


def decide_route(features: ItemFeatures, model_wants_deep: bool, policy: RoutingPolicy,
                 model_wants_draw: bool = False) -> RouteDecision:
    """Fast, deep or draw for one item, with the reason; the first matching reason wins.

    A drawing request (the fan's words, or the fast model's [draw] on an item with words when
    its verdicts are trusted) always gets a holding line: a picture takes seconds.
    """
    if policy.draw:
        if features.draw_ask is not None:
            return RouteDecision("draw", RouteReason.DRAW_REQUEST, hold=True)
        # A request is made in words: a picture alone asks nothing, whatever the model read into it.
        if model_wants_draw and policy.trust_model_verdict and features.text_chars:
            return RouteDecision("draw", RouteReason.DRAW_VERDICT, hold=True)
    reason = _wanted_reason(features, model_wants_deep, policy)
    if reason is RouteReason.SIMPLE or not policy.escalate:
        return RouteDecision("fast", reason, hold=False)
    return RouteDecision("deep", reason, hold=reason in policy.hold_for)


def item_priority(features: ItemFeatures) -> int:
    """Which items a paced room answers first: a fan who asked or wrote something beats a bare image."""
    score = 0
    if features.has_question or features.has_maths:
        score += 2
    if features.text_chars:
        score += 1
    if features.kind == "fan_image":
        score += 1
    return score
