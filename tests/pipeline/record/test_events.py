"""``record.mode: events``: a camera recorded only around its alerts. The stream is read from a
file as fast as it can (``realtime=False``: each packet 'arrives' at its own time), the events
come late, as alert messages do; FFmpeg's ffprobe judges the segments."""

from __future__ import annotations

import time
import uuid

import pytest
import redis

from pipeline.common.redis import RedisKeys
from pipeline.record.events import MARGIN_S, EventPoller, EventSchedule
from pipeline.record.holds import Hold, HoldStore
from pipeline.record.segmenter import Recorder
from tests.support.assets import footage_path
from tests.support.config import REDIS_URL
from tests.support.recordings import CLIP, CLIP_GOP_S, decode_errors, ffprobe_duration
from tests.support.redis import cleanup


class LateSchedule(EventSchedule):
    """Events that become known only some time after they started (``(start, end, known_at)``
    in seconds from ``base``), like alert messages."""

    def __init__(self, base: float, events: list[tuple[float, float, float]]) -> None:
        super().__init__("cam1", pre_s=0.0, post_s=0.0)
        self.base, self.events = base, events
        self.latest = 0.0  # the newest time asked about: the stream's "now"

    def ranges(self, now: float) -> list[tuple[float, float]]:
        self.latest = max(self.latest, now)
        b = self.base
        return [(b + s, b + e) for s, e, known in self.events if self.latest >= b + known]


def test_events_mode_records_only_around_late_events_from_a_keyframe(tmp_path):
    # event 1 becomes known 3 s after it started: its start comes from the packets held in
    # memory; event 2 becomes known 17 s after it started, longer than the held pre_s + margin
    # (10 s): only its last second or so is there to record
    assert MARGIN_S == 10.0
    events = [(3.5, 8.5, 6.5), (20.5, 28.5, 37.5)]
    base = time.time()
    schedule = LateSchedule(base, events)
    segments = []
    rec = Recorder(
        "cam1",
        str(footage_path(CLIP)),
        tmp_path,
        segment_s=10,
        settle_s=0,
        events=schedule,
        realtime=False,
        on_segment=segments.append,
    )
    rec.run()  # the file to its end (140 s of footage, read at full speed)
    assert rec.stats.packets > 1000  # the whole stream was read
    assert rec.gate is not None and rec.gate.events == 2
    # base + offset is where the file's time 0 is on the clock: within a few tenths of base
    t0 = segments[0].start - round(segments[0].start - base)
    rel = [(round(s.start - t0, 2), round(s.end - t0, 2)) for s in segments]
    # each stretch starts at the keyframe (one a second) at or before its start and ends at the
    # first keyframe past its end; nothing between the events, nothing after
    assert rel == [(3.0, 9.0), (27.0, 29.0)], rel
    files = sorted(p for p in tmp_path.rglob("*.mp4"))
    assert [f.relative_to(tmp_path) for f in files] == sorted(s.path for s in segments)
    for seg in segments:
        path = tmp_path / seg.path
        assert ffprobe_duration(path) == pytest.approx(seg.duration, abs=0.15)
        assert decode_errors(path) == ""
    assert CLIP_GOP_S == 1.0  # the footage's keyframe interval the expectations above rely on


def test_a_running_alert_is_recorded_until_it_ends():
    s = EventSchedule("cam1", pre_s=5.0, post_s=5.0)
    assert s.keep_s == 5.0 + MARGIN_S
    s.update([Hold("a1", 95.0, 105.0, 1e9, open=True)])  # started at 100, still running
    assert s.wanted(150.0)  # long after started_at + post_s
    s.update([Hold("a1", 95.0, 165.0, 1e9)])  # ended at 160
    assert s.wanted(164.9) and not s.wanted(165.0)
    assert s.first_start(160.0, 170.0) == 95.0 and s.first_start(165.0, 170.0) is None


@pytest.mark.integration
def test_the_recorder_learns_of_alerts_from_the_holds_any_follower_wrote():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e}): run `make infra-up`")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    holds = HoldStore(client, RedisKeys(prefix))
    try:
        now = time.time()
        schedule = EventSchedule("cam1", pre_s=5.0, post_s=5.0)
        poller = EventPoller(holds, lambda: {"cam1": schedule})
        holds.hold("cam1", "a1", now - 10, now - 5, now + 3600, open=True)  # started 5 s ago
        holds.hold("cam2", "a2", now - 10, now + 60, now + 3600)  # another camera's
        poller.poll_once()
        assert schedule.wanted(now + 30)  # running: recorded on
        holds.hold("cam1", "a1", now - 10, now + 2, now + 3600)  # its ended message came
        poller.poll_once()
        assert schedule.wanted(now + 1) and not schedule.wanted(now + 30)
    finally:
        cleanup(client, prefix)
