"""The recorder service (``vigil record``, and inside ``vigil run``): one :class:`Recorder` per
camera it owns.

Recorders share the cameras the way the ingest workers do: they form a consumer group of their
own (``recordings.group_id``) on the cameras topic through the same registry watcher
(:class:`pipeline.cameras.registry.RegistryWatcher`), so Kafka's partition assignment decides
which recorder records which camera, and moves the cameras of a recorder that stops or dies to
the others. A camera is recorded when it is ``enabled`` and ``record.enabled``; the recording is
of its ``record_url`` (the main stream) or else its ``url``. With the ingest worker reading
``url``, a camera has at most two RTSP sessions: detection's and the recording's.

A camera in ``record.mode: events`` is recorded only around its alerts and its motion
(``events.py``): the service reads the holds of those cameras (written from the alerts and the
motion spells by whichever recorder read them) from Redis (:class:`EventPoller`) for their
recorders.

Every finished segment goes into the segment index (:class:`SegmentIndex`). A definition naming
one of Vigil's own services (by ``url`` or ``record_url``) is refused, logged once, and leaves
the camera's running recorder as it was, as in the ingest worker. Stopping (SIGTERM, SIGINT, a
camera removed or moved to another recorder) finishes the current segment.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Collection
from pathlib import Path

from pipeline.cameras.registry import RegistryWatcher
from pipeline.cameras.spec import CameraSpec, Endpoint
from pipeline.common.errors import UserError
from pipeline.common.kafka import KafkaConfig, ensure_topics
from pipeline.record.alert_follower import AlertFollower
from pipeline.record.config import RecordingsConfig
from pipeline.record.events import EventPoller, EventSchedule
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.motion_follower import MotionFollower
from pipeline.record.retention import RetentionLoop
from pipeline.record.segmenter import DEFAULT_SETTLE_S, Recorder

log = logging.getLogger(__name__)


def default_recorder_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-record"


def wants_recording(spec: CameraSpec) -> bool:
    """Whether ``spec`` is a camera to record."""
    return spec.enabled and spec.record.enabled


class RecorderService:
    """Records the cameras Kafka assigns to this recorder (module docstring)."""

    def __init__(
        self,
        kafka: KafkaConfig,
        recordings: RecordingsConfig,
        index: SegmentIndex,
        *,
        recorder_id: str | None = None,
        forbidden_endpoints: Collection[Endpoint] = (),
        settle_s: float = DEFAULT_SETTLE_S,
        retention: RetentionLoop | None = None,
        follower: AlertFollower | None = None,
        holds: HoldStore | None = None,
        motion: MotionFollower | None = None,
    ) -> None:
        self.kafka = kafka
        self.cfg = recordings
        self.index = index
        self.recorder_id = recorder_id or default_recorder_id()
        # Vigil's own services (Kafka, Redis, MQTT), handed in by the composition layer
        self.forbidden_endpoints = frozenset(forbidden_endpoints)
        self.settle_s = settle_s
        self.root = Path(recordings.dir)  # made (and checked) by the first recorder
        self._recorders: dict[str, tuple[CameraSpec, Recorder]] = {}
        self._closing = False
        self._refused: dict[str, CameraSpec] = {}
        self._lock = threading.Lock()
        self.watcher: RegistryWatcher | None = None
        # the retention passes over recordings.dir (every camera there, not only the owned ones:
        # the disk budget is the folder's); None: nothing deleted by this process
        self.retention = retention
        # holds the recordings of the alerts on vigil.alerts (alert_follower.py); None: no holds
        self.follower = follower
        # holds the recordings of the motion spells on vigil.motion (motion_follower.py)
        self.motion = motion
        # the events of the cameras in mode events (their alerts' holds); None: such cameras
        # are not recorded (logged)
        self.events = None if holds is None else EventPoller(holds, self.schedules)
        self._schedules: dict[str, EventSchedule] = {}

    def __str__(self) -> str:
        return f"recorder {self.recorder_id}"

    @property
    def cameras(self) -> list[str]:
        """The cameras being recorded here."""
        with self._lock:
            return sorted(self._recorders)

    def schedules(self) -> dict[str, EventSchedule]:
        """The event schedules of the cameras recorded here in mode events."""
        with self._lock:
            return dict(self._schedules)

    def recorder(self, camera_id: str) -> Recorder | None:
        with self._lock:
            entry = self._recorders.get(camera_id)
        return entry[1] if entry is not None else None

    # -- ownership ---------------------------------------------------------------------------
    def _refuse(self, spec: CameraSpec) -> bool:
        """Whether ``spec`` names one of Vigil's own services (logged once per definition)."""
        try:
            spec.check_urls(forbidden=self.forbidden_endpoints)
        except ValueError as e:
            if self._refused.get(spec.id) != spec:
                log.error("%s: camera %s refused: %s", self, spec.id, e)
                self._refused[spec.id] = spec
            return True
        self._refused.pop(spec.id, None)
        return False

    def reconcile(self, owned: dict[str, CameraSpec]) -> None:
        """Record the owned cameras that want it; stop the recorders of cameras no longer owned,
        no longer recorded, or whose recording settings changed (then started anew)."""
        with self._lock:
            if self._closing:
                return
            refused = {cid for cid, spec in owned.items() if self._refuse(spec)}
            self._refused = {cid: s for cid, s in self._refused.items() if cid in owned}
            stopping: list[Recorder] = []
            for cid, (old, rec) in list(self._recorders.items()):
                if cid in refused:
                    continue
                spec = owned.get(cid)
                if spec is None:
                    why = "no longer assigned here (removed or moved to another recorder)"
                elif not wants_recording(spec):
                    why = "recording turned off"
                elif (spec.recording_url, spec.record) != (old.recording_url, old.record):
                    why = "definition changed"
                else:
                    continue
                log.info("%s: stopping camera %s (%s)", self, cid, why)
                del self._recorders[cid]
                self._schedules.pop(cid, None)
                stopping.append(rec)
            self._stop_all(stopping)
            for cid, spec in owned.items():
                if cid in self._recorders or cid in refused or not wants_recording(spec):
                    continue
                try:
                    rec = self._make_recorder(spec).start()
                except UserError as e:
                    log.error("%s: camera %s not recorded: %s", self, cid, e)
                    continue
                main = "record_url" if spec.record_url else "url"
                how = "around its alerts" if rec.gate is not None else "continuously"
                log.info("%s: recording %s from its %s, %s", self, spec, main, how)
                self._recorders[cid] = (spec, rec)
                if rec.gate is not None:
                    self._schedules[cid] = rec.gate.schedule

    def _make_recorder(self, spec: CameraSpec) -> Recorder:
        c = self.cfg
        events = None
        if spec.record.mode == "events":
            if self.events is None:
                raise UserError("record.mode events needs the alerts' holds (none given)")
            events = EventSchedule(spec.id, spec.record.pre_s, spec.record.post_s)
        return Recorder(
            spec.id,
            spec.recording_url,
            self.root,
            segment_s=c.segment_s,
            open_timeout_s=c.open_timeout_s,
            read_timeout_s=c.read_timeout_s,
            backoff_initial_s=c.backoff_initial_s,
            backoff_max_s=c.backoff_max_s,
            settle_s=self.settle_s,
            on_segment=self.index.add,
            source="record_url" if spec.record_url else "url",
            events=events,
        )

    @staticmethod
    def _stop_all(recorders: list[Recorder]) -> None:
        """Stop recorders side by side (each finishes and indexes its segment)."""
        threads = [threading.Thread(target=r.stop, daemon=True) for r in recorders]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> RecorderService:
        log.info(
            "%s: joining group %s on %s (recordings under %s)",
            self,
            self.cfg.group_id,
            self.kafka.topics.cameras,
            self.root,
        )
        # the topics first: a watcher that joins before the cameras topic exists waits for its
        # partitions (bootstrap_timeout_ms) and starts with none
        ensure_topics(self.kafka)
        self.watcher = RegistryWatcher(
            self.kafka,
            self.cfg.group_id,
            self.reconcile,
            session_timeout_ms=self.cfg.session_timeout_ms,
            client_suffix="record",
        ).start()
        if self.retention is not None:
            self.retention.start()
        if self.follower is not None:
            self.follower.start()
        if self.motion is not None:
            self.motion.start()
        if self.events is not None:
            self.events.start()
        return self

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        """Record until ``stop`` is set (or ``max_seconds`` passed); then :meth:`close`. A
        registry watcher that fails ends the run with its error."""
        if self.watcher is None:
            self.start()
        deadline = None if max_seconds is None else time.monotonic() + max_seconds
        try:
            while not stop.wait(0.5):
                if self.watcher is not None and self.watcher.error is not None:
                    raise UserError(f"{self}: camera registry failed: {self.watcher.error}")
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            self.close()

    def close(self) -> None:
        """Finish every segment, then leave the group (the cameras go to the other recorders:
        one camera is never recorded by two recorders at once)."""
        with self._lock:
            self._closing = True
            recorders = [rec for _, rec in self._recorders.values()]
            self._recorders.clear()
            self._schedules.clear()
        self._stop_all(recorders)
        if self.events is not None:
            self.events.stop()
        if self.retention is not None:
            self.retention.stop()
        if self.follower is not None:
            self.follower.stop()
        if self.motion is not None:
            self.motion.stop()
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        log.info("%s: stopped (%d camera(s) finished)", self, len(recorders))
