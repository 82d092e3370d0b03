"""Thank-you digests: shed fans thanked once, by name, in one line per room and window."""

from __future__ import annotations

from stream.contracts import ShedItem, Source, UserRef, new_id, utcnow
from stream.fans.digests import DigestWindow, digest_line
from stream.reasons import ShedReason


def shed(user: str, name: str, reason=ShedReason.ROOM_PACED, kind="fan_image", room="r1") -> ShedItem:
    return ShedItem(shed_id=new_id(), reason=reason, item_id=new_id(), room=room, kind=kind,
                    user=UserRef(id=user, display_name=name), age_ms=10.0,
                    source=Source(topic="fan.images", partition=0, offset=1), at=utcnow())


def test_each_fan_is_thanked_once_by_name_in_the_order_they_came():
    window = DigestWindow("r1")
    for user, name in [("a", "Aki"), ("b", "Ben"), ("a", "Aki"), ("c", "Chen")]:
        window.add(shed(user, name))
    assert digest_line(window, "en", max_names=5) == "Thank you Aki, Ben and Chen for the drawings!"
    assert digest_line(window, "zh", max_names=5) == "谢谢Aki、Ben和Chen的画！"


def test_beyond_the_maximum_the_rest_are_counted_not_named():
    window = DigestWindow("r1")
    for i in range(6):
        window.add(shed(f"u{i}", f"Fan{i}", kind="danmaku_screenshot"))
    assert digest_line(window, "en", max_names=3) == "Thank you Fan0, Fan1, Fan2 and 3 more for the comments!"


def test_blocked_stale_and_duplicate_items_are_never_thanked():
    window = DigestWindow("r1")
    assert not window.add(shed("s", "Slow", reason=ShedReason.STALE))
    assert not window.add(shed("d", "Twice", reason=ShedReason.DUPLICATE))
    assert not window.add(shed("o", "Other room", room="r2"))
    window.add(shed("t", "Troll"))
    assert digest_line(window, "en", max_names=5, blocked={"t"}) is None
    window.add(shed("k", "Kind", reason=ShedReason.USER_RATE_LIMITED))
    assert digest_line(window, "en", max_names=5, blocked={"t"}) == "Thank you Kind for the drawings!"
