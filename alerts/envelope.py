"""Checks of a detection record before the rule engine sees it: the Kafka envelope must fit the
message (key = camera id, a capture time near the record's and this clock, a reader epoch not
ahead of the clock or of the capture time). A record that fails is dead-lettered with the reason
(docs/messages.md)."""

from __future__ import annotations

import math
import time
from typing import Any


def check_envelope(
    rec: Any,
    msg: Any,
    max_future_s: float | None,
    max_age_s: float | None,
    max_clock_skew_s: float | None = None,
) -> None:
    """``ValueError`` when the record cannot be a camera's detection message: its key is not
    its ``camera_id`` (its state would live on another camera's partition), its
    ``capture_ts`` is outside the window around the record's timestamp and this clock, or its
    ``epoch`` lies ahead of this clock or of its ``capture_ts`` (see :func:`check_epoch`)."""
    if not isinstance(msg, dict):
        return  # FrameEvent.from_message says what is wrong
    check_epoch(msg, max_clock_skew_s)
    cam = msg.get("camera_id")
    if isinstance(cam, str):
        key = rec.key.decode("utf-8", "replace") if rec.key is not None else None
        if key != cam:
            raise ValueError(
                f"message key {key!r} does not match camera_id {cam!r} "
                "(detection messages are keyed by camera id)"
            )
    ts = msg.get("capture_ts")
    if type(ts) not in (int, float) or not math.isfinite(ts):
        return  # FrameEvent.from_message says what is wrong
    ahead, behind = max_future_s, max_age_s
    refs = [("the service's clock", time.time())]
    if getattr(rec, "timestamp", None) is not None and rec.timestamp >= 0:
        refs.append(("the Kafka record's timestamp", rec.timestamp / 1000.0))
    for what, ref in refs:
        if ahead is not None and ts > ref + ahead:
            raise ValueError(
                f"capture_ts {ts!r} is {ts - ref:.0f} s ahead of {what} "
                f"(alerts.service.max_future_s: {ahead:g})"
            )
        if behind is not None and ts < ref - behind:
            raise ValueError(
                f"capture_ts {ts!r} is {ref - ts:.0f} s behind {what} "
                f"(alerts.service.max_age_s: {behind:g})"
            )


def check_epoch(
    msg: dict[str, Any], max_clock_skew_s: float | None, now: float | None = None
) -> None:
    """``ValueError`` when the message's reader ``epoch`` (ms, when its reader started) is more
    than ``max_clock_skew_s`` ahead of this clock or of the message's own ``capture_ts``.

    The engine takes the reader that started later as a camera's current one, so one message
    with an epoch far ahead (forged, or from a broken clock) would refuse every real frame after
    it as an older reader's: the camera would be muted for good. A real reader's epoch is its
    start time, never after its frames' capture and never ahead of a synced clock."""
    if max_clock_skew_s is None:
        return
    epoch = msg.get("epoch")
    if type(epoch) is not int:
        return  # FrameEvent.from_message says what is wrong
    started = epoch / 1000.0
    refs = [("the service's clock", time.time() if now is None else now)]
    ts = msg.get("capture_ts")
    if type(ts) in (int, float) and math.isfinite(ts):
        refs.append(("its capture_ts", float(ts)))
    for what, ref in refs:
        if started > ref + max_clock_skew_s:
            raise ValueError(
                f"epoch {epoch} is {started - ref:.0f} s ahead of {what} "
                f"(alerts.service.max_clock_skew_s: {max_clock_skew_s:g})"
            )
