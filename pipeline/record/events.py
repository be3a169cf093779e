"""Recording in ``record.mode: events``: only around alerts and motion (docs/recordings.md,
"Mode").

The recorder keeps the camera's stream open and copies its packets as in continuous mode, but
while no event is on it only holds them in memory (:class:`PacketRing`: whole GOPs, from a
keyframe, covering the last ``pre_s`` + :data:`MARGIN_S` seconds, bounded in bytes). An event is
a **hold** (``pipeline.record.holds``: ``[started_at - pre_s, ended_at + post_s]``, written by
the alert follower of whichever recorder read the alert), read from Redis by
:class:`EventPoller` twice a second into each camera's :class:`EventSchedule`: so the recorder
that owns the camera learns of its alerts whichever recorder process read them, and a recorder
taking a camera over mid-alert sees the alert too. When an event's range reaches the packets
held, :class:`EventGate` writes them from the keyframe at or before the range's start (alert
messages come a second or more after the frames they are about: the margin is for that), then
every packet live, and ends the segment at the first keyframe past the range's end. A running
alert's hold is ``open``: it is recorded until its ``ended`` hold comes (at most
:data:`MAX_OPEN_S`). Segments start on keyframes, are cut every ``segment_s`` and indexed as in
continuous mode; the time between events is a gap.

Motion starts a recording too: ingest publishes each camera's motion spells on
``vigil.motion`` (checking the camera's frames for motion even when its motion gating is off),
and the recorder's motion follower turns them into holds like an alert's
(``motion_follower.py``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.record.holds import Hold, HoldStore
from pipeline.record.stream import error_text

log = logging.getLogger(__name__)

#: Held beyond ``pre_s``: an alert message comes after its frames (the detection, the alert
#: service's decision, the follower, the poll).
MARGIN_S = 10.0
#: Most bytes held in memory per camera (a stream whose keyframes are too far apart for its
#: ``pre_s`` keeps less than ``pre_s``).
RING_MAX_BYTES = 64 * 1024 * 1024
#: A running alert (an open hold) is recorded at most this long after its start, in case its
#: ``ended`` message never comes.
MAX_OPEN_S = 3600.0
POLL_S = 0.5


class EventSchedule:
    """The ranges one camera records: its holds as last read (replaced whole: safe to read from
    the recorder's thread while the poller writes). ``post_s`` extends a running alert."""

    def __init__(self, camera_id: str, pre_s: float, post_s: float) -> None:
        self.camera_id = camera_id
        self.pre_s, self.post_s = pre_s, post_s
        self.keep_s = pre_s + MARGIN_S
        self._holds: tuple[Hold, ...] = ()

    def update(self, holds: list[Hold]) -> None:
        self._holds = tuple(holds)

    def ranges(self, now: float) -> list[tuple[float, float]]:
        """``(start, end)`` of each event; a running alert's end is ``now + post_s`` (until
        :data:`MAX_OPEN_S` after its start)."""
        out = []
        for h in self._holds:
            end = h.end
            if h.open:
                end = max(end, min(now, h.start + MAX_OPEN_S) + self.post_s)
            out.append((h.start, end))
        return out

    def wanted(self, t: float) -> bool:
        """Whether an event covers the time ``t``."""
        return any(start <= t < end for start, end in self.ranges(t))

    def first_start(self, t0: float, t1: float) -> float | None:
        """The earliest start of the events overlapping ``[t0, t1]`` (the packets held), or
        None."""
        starts = [start for start, end in self.ranges(t1) if start <= t1 and end > t0]
        return min(starts) if starts else None


@dataclass(slots=True)
class Held:
    """A packet held in memory, with what the recorder knew when it came."""

    pkt: object
    pts_s: float
    send_s: float | None
    dur_s: float
    arrival: float
    wall: float  # its time on the capture_ts clock when it came
    offset: float  # the anchor it came with (wall - pts_s)
    size: int
    keyframe: bool


class PacketRing:
    """The last ``keep_s`` seconds of packets as whole GOPs (the oldest starts on a keyframe at
    or before ``keep_s`` ago), at most ``max_bytes``."""

    def __init__(self, keep_s: float, max_bytes: int = RING_MAX_BYTES) -> None:
        self.keep_s = keep_s
        self.max_bytes = max_bytes
        self.gops: deque[list[Held]] = deque()
        self.bytes = 0

    @property
    def start(self) -> float | None:
        """The time of the oldest packet held (a keyframe), or None."""
        return self.gops[0][0].wall if self.gops else None

    def add(self, held: Held) -> None:
        if held.keyframe:
            self.gops.append([])
        elif not self.gops:
            return  # nothing is held before the first keyframe: it could not be played
        self.gops[-1].append(held)
        self.bytes += held.size
        while len(self.gops) > 1 and (
            self.gops[1][0].wall <= held.wall - self.keep_s or self.bytes > self.max_bytes
        ):
            self._drop()
        if self.bytes > self.max_bytes:  # one GOP larger than the budget: none of it is kept
            self._drop()

    def _drop(self) -> None:
        gop = self.gops.popleft()
        self.bytes -= sum(h.size for h in gop)

    def take_from(self, t: float) -> list[Held]:
        """The packets from the GOP holding ``t`` (or the oldest, if ``t`` is older) on; the
        ring is empty afterwards."""
        while len(self.gops) > 1 and self.gops[1][0].wall <= t:
            self.gops.popleft()
        out = [h for gop in self.gops for h in gop]
        self.clear()
        return out

    def clear(self) -> None:
        self.gops.clear()
        self.bytes = 0


# write(template, pkt, pts_s, send_s, dur_s, arrival, offset, window) -> (offset, window)
Write = Callable[..., tuple[float, float]]


class EventGate:
    """Between the recorder's packets and its segments in mode events (module docstring):
    ``write`` is the recorder's packet writer (which starts segments on keyframes), ``finish``
    closes the segment at a keyframe."""

    def __init__(
        self, schedule: EventSchedule, write: Write, finish: Callable[[], None], name: str
    ) -> None:
        self.schedule = schedule
        self.write = write
        self.finish = finish
        self.name = name
        self.ring = PacketRing(schedule.keep_s)
        self.on = False
        self.events = 0  # stretches recorded

    def reset(self) -> None:
        """A new connection: nothing held, no event on (the caller finished the segment)."""
        self.ring.clear()
        self.on = False

    def put(self, template, pkt, pts_s, send_s, dur_s, arrival, offset, window):
        """Hold or write one packet; returns the ``(offset, window)`` to carry on with, like the
        recorder's writer."""
        wall = offset + pts_s
        if self.on:
            if not (pkt.is_keyframe and not self.schedule.wanted(wall)):
                return self.write(template, pkt, pts_s, send_s, dur_s, arrival, offset, window)
            self._end()  # past every event's end, at a keyframe: this one starts the ring
        elif pkt.is_keyframe and window < float("inf"):
            offset, window = window, float("inf")  # a new anchor at each GOP, like a segment's
            wall = offset + pts_s
        if send_s is not None:
            window = min(window, arrival - send_s)
        self.ring.add(
            Held(pkt, pts_s, send_s, dur_s, arrival, wall, offset, pkt.size, pkt.is_keyframe)
        )
        return self._start_if_wanted(template, wall, offset, window)

    def _start_if_wanted(self, template, now: float, offset: float, window: float):
        """Write the packets held from the keyframe at or before an event's start, if an event
        overlaps them (up to the first keyframe past its end, if that is held already)."""
        first = self.ring.start
        start = None if first is None else self.schedule.first_start(first, now)
        if start is None:
            return offset, window
        taken = self.ring.take_from(start)
        self.on = True
        self.events += 1
        log.info(
            "%s: event from %.3f; recording from %.1f s before it",
            self.name,
            start,
            max(0.0, start - taken[0].wall),
        )
        # the segment's packets keep the spacing of their PTS: one anchor for all (the first's)
        off, win = taken[0].offset, float("inf")
        for i, h in enumerate(taken):
            if i > 0 and h.keyframe and not self.schedule.wanted(h.wall):
                # the event ended within what was held (its alert came late): the rest is held
                # again, and may hold the start of another event
                self._end()
                for rest in taken[i:]:
                    self.ring.add(rest)
                return self._start_if_wanted(template, now, offset, window)
            off, win = self.write(template, h.pkt, h.pts_s, h.send_s, h.dur_s, h.arrival, off, win)
        return off, win

    def _end(self) -> None:
        self.finish()
        self.on = False
        log.info(
            "%s: event over; holding the last %.0f s until the next",
            self.name,
            self.schedule.keep_s,
        )


class EventPoller:
    """Reads the holds of the cameras recorded in mode events into their schedules every
    ``interval_s`` (one thread per recorder service). ``schedules()`` gives them by camera. A
    Redis that cannot be read keeps the last ranges (one log line per failing spell)."""

    def __init__(
        self,
        holds: HoldStore,
        schedules: Callable[[], dict[str, EventSchedule]],
        interval_s: float = POLL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.holds = holds
        self.schedules = schedules
        self.interval_s = interval_s
        self.clock = clock
        self._failing = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> EventPoller:
        self._stop.clear()
        self._thread = threading.Thread(target=self._main, name="record-events", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None

    def _main(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll_once()

    def poll_once(self) -> None:
        try:
            for camera_id, schedule in self.schedules().items():
                schedule.update(self.holds.active(camera_id, self.clock()))
        except Exception as e:  # noqa: BLE001 - keep the last ranges; try again
            if not self._failing:
                self._failing = True
                log.warning(
                    "recorder: cannot read the alerts' holds (%s); events recordings go on with "
                    "the last known",
                    error_text(e),
                )
            return
        if self._failing:
            self._failing = False
            log.info("recorder: reading the alerts' holds again")
