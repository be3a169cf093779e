"""Hot reload: an ingest worker follows the registry's production model without stopping.

:class:`HotReloader` subscribes to the registry's Redis pub/sub channel and, as a fallback for a
lost notice (pub/sub does not queue), re-reads the production version every
``models.poll_interval_s``. When production changes it fetches the file (sha256-checked), builds
and warms up a new :class:`~detectors.engine.Detector` in its own thread while the old one keeps
serving, then swaps it in between two batches (``IngestWorker.swap_detector``). A model that fails
to fetch, load or run is refused: the old one keeps running, the refusal is logged, counted and
recorded in the registry (``vigil models list`` shows it), and it is not retried until production
changes again.

Redis is not trusted to choose code: before anything is fetched the production entry must be
well-formed and signed with ``models.signing_key_file`` (``ModelRegistry.verify``), the file comes
only from the store and must match the entry's sha256, and it is loaded with
``torch.load(weights_only=True)`` (``safe_loading``), so a pickle cannot run code even if signed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import redis
from prometheus_client import Counter

from detectors.config import DetectorConfig
from detectors.engine import Detector
from detectors.loading import safe_loading
from detectors.retrain.config import ModelsConfig
from detectors.retrain.model_registry import ModelRefused, ModelRegistry, shown
from detectors.retrain.signing import SigningKeyError
from pipeline.common.redis import RedisConfig

log = logging.getLogger(__name__)

RELOADS = Counter("vigil_model_reloads_total", "Production models swapped in by hot reload")
RELOAD_FAILURES = Counter(
    "vigil_model_reload_failures_total", "Promoted models refused (fetch, load or warm-up failed)"
)
RELOAD_REFUSED = Counter(
    "vigil_model_reload_refused_total",
    "Production models a worker refused to load, by reason (unsigned, bad_signature, no_key, "
    "bad_version, bad_entry, outside_store, sha256_mismatch, load_failed)",
    ["reason"],
)


class HotReloader:
    def __init__(
        self,
        registry,
        detector_cfg: DetectorConfig,
        worker_id: str,
        swap: Callable[[Any], Any],
        poll_interval_s: float = 5.0,
    ) -> None:
        """``swap(new_detector)`` puts a loaded model in service (the ingest worker's
        ``swap_detector``) and returns the old one."""
        self.registry = registry
        self.detector_cfg = detector_cfg
        self.worker_id = worker_id
        self._swap = swap
        self.poll_interval_s = poll_interval_s
        self.current: str | None = None  # registry version the worker runs (None: config weights)
        self.refused: dict[str, str] = {}  # version -> why
        self._refused_entry: tuple | None = None  # the last entry refused before loading
        self._no_key_logged = False
        self.swaps = 0
        self._stop = threading.Event()
        self._check_lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="hot-reload", daemon=True)

    # -- loading ---------------------------------------------------------------------------
    def _build(self, mv):
        path = self.registry.fetch(mv)
        cfg = self.detector_cfg.model_copy(update={"weights": str(path)})
        with safe_loading():  # weights_only: a pickle cannot run code, signed or not
            det = Detector(cfg)  # loads and runs a warm-up batch: a broken model fails here
        if det.version != mv.version:
            raise ValueError(f"loaded file has version {det.version}, expected {mv.version}")
        return det

    def _refuse(self, what: str, reason: str, msg: str) -> None:
        """Log (one line), count and report a refused model; the running one stays."""
        RELOAD_REFUSED.labels(reason=reason).inc()
        RELOAD_FAILURES.inc()
        log.error(
            "worker %s: refused model %s (%s: %s); keeping %s",
            self.worker_id,
            what,
            reason,
            msg,
            self.current or "the configured weights",
        )
        with contextlib.suppress(Exception):
            self.registry.report_worker(self.worker_id, self.current, "refused", msg)

    def load(self, mv) -> bool:
        """Load ``mv`` and swap it in; False (old model kept) when it fails."""
        t0 = time.perf_counter()
        try:
            det = self._build(mv)
        except Exception as e:  # any failure: keep serving with the old model
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            self.refused[mv.version] = msg
            reason = e.reason if isinstance(e, ModelRefused) else "load_failed"
            self._refuse(mv.label, reason, msg)
            return False
        self._swap(det)
        self.current = mv.version
        self.swaps += 1
        RELOADS.inc()
        log.info(
            "worker %s: now running model %s (loaded in %.1f s)",
            self.worker_id,
            mv.label,
            time.perf_counter() - t0,
        )
        with contextlib.suppress(Exception):
            self.registry.report_worker(self.worker_id, mv.version, "running")
        return True

    def _signing_key(self) -> bytes | None:
        """The key, or None after saying once how to configure it (hot reload is off meanwhile)."""
        try:
            key = self.registry.signing_key()
        except SigningKeyError as e:
            if not self._no_key_logged:
                self._no_key_logged = True
                log.error(
                    "worker %s: hot reload refused: %s (models.signing_key_file, see "
                    "docs/retraining.md); keeping %s",
                    self.worker_id,
                    e,
                    self.current or "the configured weights",
                )
            return None
        self._no_key_logged = False
        return key

    def check(self) -> bool:
        """Swap in the production model if it changed; True when a swap happened.

        Only a well-formed, signed entry is loaded; anything else is refused once per entry.
        """
        with self._check_lock:
            ref = self.registry.production_version()
            if ref is None or ref == self.current or ref in self.refused:
                return False
            try:
                mv = self.registry.production()
                if mv is None:
                    return False
                key = self._signing_key()
                if key is None:
                    entry = ("no_key", mv.version, mv.sha256, mv.signature)
                    if entry != self._refused_entry:  # counted once per entry, logged once
                        self._refused_entry = entry
                        RELOAD_REFUSED.labels(reason="no_key").inc()
                        RELOAD_FAILURES.inc()
                        with contextlib.suppress(Exception):
                            self.registry.report_worker(
                                self.worker_id, self.current, "refused", "no model signing key"
                            )
                    return False
                self.registry.verify(mv, key)
            except ModelRefused as e:
                entry = (e.reason, ref, str(e))
                if entry != self._refused_entry:
                    self._refused_entry = entry
                    self._refuse(shown(ref), e.reason, str(e))
                return False
            self._refused_entry = None
            return self.load(mv)

    def initial(self) -> None:
        """At worker start: run the production model when there is one (else config weights)."""
        try:
            self.check()
        except Exception as e:
            log.error(
                "worker %s: model registry unavailable at start (%s); using detector.weights "
                "and retrying in the background",
                self.worker_id,
                e,
            )

    # -- background ------------------------------------------------------------------------
    def start(self) -> HotReloader:
        self._thread.start()
        return self

    def _run(self) -> None:
        pubsub = None
        while not self._stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.registry.client.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.registry.channel)
                    self.check()  # anything promoted while we were not listening
                msg = pubsub.get_message(timeout=self.poll_interval_s)
                if self._stop.is_set():
                    break
                if msg is not None:
                    with contextlib.suppress(ValueError, TypeError):
                        log.info(
                            "worker %s: registry event %s",
                            self.worker_id,
                            json.loads(msg["data"]),
                        )
                self.check()
            except (redis.RedisError, OSError) as e:
                log.warning("hot reload: registry unavailable (%s); retrying", e)
                if pubsub is not None:
                    with contextlib.suppress(Exception):
                        pubsub.close()
                pubsub = None
                self._stop.wait(min(self.poll_interval_s, 5.0))
            except Exception:
                log.exception("hot reload: unexpected error; retrying")
                self._stop.wait(self.poll_interval_s)
        if pubsub is not None:
            with contextlib.suppress(Exception):
                pubsub.close()

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        self.registry.close()


def start_hot_reload(
    redis_cfg: RedisConfig,
    models_cfg: ModelsConfig,
    detector_cfg: DetectorConfig,
    worker_id: str,
    swap: Callable[[Any], Any],
) -> HotReloader | None:
    """Follow the registry when ``models.registry`` is set; loads production before cameras start."""
    if not models_cfg.registry:
        return None
    reloader = HotReloader(
        ModelRegistry(redis_cfg, models_cfg),
        detector_cfg,
        worker_id,
        swap,
        poll_interval_s=models_cfg.poll_interval_s,
    )
    reloader.initial()
    return reloader.start()
