"""``vigil demo``: the whole chain on recorded footage, printing each alert as it lands.

camera-sim (RTSP) -> ingest + detector -> Kafka -> alert service -> Redis, and a recorder beside
ingest, all real; the demo only watches the Redis alert stream, saves each snapshot to disk,
prints a summary and exports each alert's clip from the recordings (a folder under the state
dir). Run from a terminal (stdin and stdout are TTYs) it then keeps the pipeline and the console
up until Ctrl-C; otherwise it ends after ``--seconds``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import logging
import os
import queue
import secrets
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import redis

from alerts.service import alert_service_runner
from alerts.store import AlertStore
from alerts.subscribe import subscribe
from pipeline.camera_sim import CameraSim
from pipeline.cameras.registry import read_registry
from pipeline.common.assets import REPO_ROOT, footage
from pipeline.common.endpoints import service_endpoints
from pipeline.common.errors import UserError
from pipeline.common.kafka import ensure_topics
from pipeline.config import load_config
from pipeline.console.auth import UserStore
from pipeline.console.clips import alert_clip_range
from pipeline.console.server import ConsoleServer
from pipeline.record.build import build_recorder_service
from pipeline.record.clips import ClipUnavailable, write_clip
from pipeline.record.index import SegmentIndex

log = logging.getLogger(__name__)

DEMO_FILES = ("one-by-one-person-detection.mp4", "classroom.mp4")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole chain on the demo footage and print alerts")
    p.add_argument("-c", "--config", default=str(REPO_ROOT / "examples" / "demo.yaml"))
    p.add_argument("--seconds", type=float, default=100.0, help="how long the pipeline runs")
    p.add_argument("--port", type=int, default=8554, help="RTSP port of the camera simulator")
    p.add_argument("-o", "--out", default="demo-output", help="where snapshots are saved")
    p.add_argument(
        "--clips",
        default=None,
        help="where each alert's clip is saved (default: $VIGIL_STATE/demo-clips, "
        "$VIGIL_STATE being .vigil when unset)",
    )
    p.add_argument(
        "--interactive",
        choices=("auto", "yes", "no"),
        default="auto",
        help="keep the pipeline and the console up after the summary until Ctrl-C "
        "(auto: when stdin and stdout are a terminal)",
    )
    p.add_argument(
        "--console-port", type=int, default=8080, help="port of the console (0: no console)"
    )
    p.add_argument(
        "--linger",
        action="store_true",
        help="keep the console up after the pipeline stops, until Ctrl-C",
    )
    p.set_defaults(func=cmd_demo)


def _stamp(ts: float | None) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3] if ts else "-"


def cmd_demo(args: argparse.Namespace) -> int:
    os.environ["VIGIL_RTSP_PORT"] = str(args.port)
    from pipeline.app import run_ingest  # noqa: PLC0415 (imports torch: loaded only when needed)

    cfg = load_config(args.config)
    alert_service = alert_service_runner(cfg)  # validates the rules before anything starts
    # records the demo's cameras (record.enabled in examples/demo.yaml) beside ingest
    recorder = build_recorder_service(
        cfg.kafka, cfg.recordings, cfg.redis, forbidden_endpoints=service_endpoints(cfg)
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    clips = Path(args.clips or Path(os.environ.get("VIGIL_STATE") or ".vigil") / "demo-clips")
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)
    interactive = args.interactive == "yes" or (
        args.interactive == "auto" and sys.stdin.isatty() and sys.stdout.isatty()
    )
    services = [alert_service, lambda stop: recorder.run(stop)]
    with demo_console(cfg, args.console_port) as console:
        return _run(args, cfg, console, services, store, out, clips, interactive, run_ingest)


@dataclass
class _Tally:
    """What the demo saw: alerts by camera, rule and status, latencies, snapshots, and the
    alerts (id -> (camera, rule)) in the order they started."""

    store: AlertStore
    out: Path
    counts: collections.Counter = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    snapshots: int = 0
    started: dict[str, tuple[str, str]] = field(default_factory=dict)

    def show(self, alert: dict) -> None:
        """Count and print one alert as it lands (its snapshot saved when it starts)."""
        self.counts[(alert["camera_id"], alert["rule_id"], alert["status"])] += 1
        snap = "-"
        if alert["status"] == "started":
            self.started[alert["id"]] = (alert["camera_id"], alert["rule_id"])
            jpeg = self.store.get_snapshot(alert["id"])
            if jpeg:
                path = self.out / f"{alert['camera_id']}-{alert['rule_id']}-{alert['id']}.jpg"
                path.write_bytes(jpeg)
                snap = str(path)
                self.snapshots += 1
            stored = self.store.get_alert(alert["id"]) or {}
            if stored.get("latency_ms") is not None:
                self.latencies.append(float(stored["latency_ms"]))
        if alert["status"] not in ("started", "ended"):
            return  # a review, a clip announcement: not news here
        when = alert.get("started_at") if alert["status"] == "started" else alert.get("ended_at")
        extra = f" count={alert['count']}" if alert.get("count") is not None else ""
        print(
            f"  {_stamp(when)}  {alert['status']:<7} {alert['camera_id']:<10} "
            f"{alert['rule_id']:<20} {alert.get('label') or '-':<8} "
            f"{alert.get('severity', ''):<6}{extra}  snapshot: {snap}",
            flush=True,
        )


def _run(args, cfg, console, services, store, out, clips, interactive, run_ingest) -> int:
    """The demo proper, with the console (or None) that :func:`demo_console` cleans up."""
    print(f"demo: serving {', '.join(DEMO_FILES)} as RTSP cameras on 127.0.0.1:{args.port}")
    sim = CameraSim([str(footage(name)) for name in DEMO_FILES], port=args.port).start()
    alerts: queue.Queue[dict] = queue.Queue()
    ready = threading.Event()

    def watch() -> None:
        for alert in subscribe(cfg, backend="redis", on_ready=ready.set):
            alerts.put(alert)

    threading.Thread(target=watch, name="demo-watch", daemon=True).start()
    if not ready.wait(30):
        print("demo: cannot read the Redis alert stream")
        sim.stop()
        return 1

    stop = threading.Event()
    pipeline_thread = threading.Thread(
        target=run_ingest,
        kwargs=dict(
            cfg=cfg,
            stop=stop,
            # from a terminal the pipeline runs on after the summary, until Ctrl-C
            max_seconds=None if interactive else args.seconds,
            sync_cameras=True,
            extra_services=services,
        ),
        name="demo-pipeline",
        daemon=True,
    )
    started = time.monotonic()
    pipeline_thread.start()
    print(
        f"demo: pipeline running for {args.seconds:.0f} s (Ctrl-C stops early); "
        "alerts as they land:\n"
    )
    tally = _Tally(store, out)
    deadline = started + args.seconds
    interrupted = False

    def running() -> bool:
        if interactive:
            return pipeline_thread.is_alive() and time.monotonic() < deadline
        return pipeline_thread.is_alive() or not alerts.empty()

    try:
        _drain(alerts, tally, running)
    except KeyboardInterrupt:
        print("\ndemo: stopping")
        interrupted = True
    finally:
        if interrupted or not interactive:
            stop.set()
            pipeline_thread.join(timeout=30)
            sim.stop()

    try:
        _summary(tally, time.monotonic() - started, out)
        live = interactive and not interrupted
        # running on, the recordings of the latest alerts are still being written: wait for them
        export_clips(cfg, store, tally.started, clips, wait=live)
        if live:
            _linger_live(console, alerts, tally, pipeline_thread)
    finally:
        if not stop.is_set():
            stop.set()
            pipeline_thread.join(timeout=30)
            sim.stop()
    if console is not None and args.linger:
        print(f"demo: console still at {console.url} (Ctrl-C ends it)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0 if tally.counts else 1


def _drain(alerts: queue.Queue, tally: _Tally, running) -> None:
    while running():
        try:
            tally.show(alerts.get(timeout=0.5))
        except queue.Empty:
            continue


def _summary(tally: _Tally, elapsed: float, out: Path) -> None:
    counts = tally.counts
    print(f"\ndemo: summary after {elapsed:.0f} s")
    if not counts:
        print("  no alerts (check the camera-sim and detector logs above)")
    for camera, rule in sorted({(c, r) for c, r, _ in counts}):
        print(
            f"  {camera:<10} {rule:<20} started {counts[(camera, rule, 'started')]:>3}  "
            f"ended {counts[(camera, rule, 'ended')]:>3}"
        )
    if tally.latencies:
        lat = sorted(tally.latencies)
        print(
            f"  capture-to-Redis latency: p50 {lat[len(lat) // 2]:.0f} ms, max {lat[-1]:.0f} ms "
            f"({len(lat)} alerts)"
        )
    print(f"  snapshots saved: {tally.snapshots} in {out}/")


def _linger_live(console, alerts: queue.Queue, tally: _Tally, pipeline_thread) -> None:
    """From a terminal: the pipeline and the console run on until Ctrl-C."""
    if console is not None:
        print(
            f"\ndemo: still running. Look around in the console: {console.url}  "
            f"(user {console.user}, password {console.password}): alerts, their clips, the "
            "cameras. Ctrl-C ends the demo; new alerts as they land:"
        )
    else:
        print("\ndemo: still running (no console); Ctrl-C ends the demo")
    with contextlib.suppress(KeyboardInterrupt):
        _drain(alerts, tally, pipeline_thread.is_alive)
    print("\ndemo: stopping")


def _clip_wait_s(cameras: dict, recordings) -> float:
    """How long an ended alert's clip may take to be recorded: its post_s, then the segment
    being written closes (segment_s), plus a margin."""
    post = max((spec.record.post_s for spec in cameras.values()), default=5.0)
    return post + recordings.segment_s + 3.0


def export_clips(cfg, store: AlertStore, started: dict, folder: Path, wait: bool) -> int:
    """Each alert's clip (as the console serves it) into ``folder``, one line per alert: its
    path, or why it has none. ``wait``: the recording goes on, wait (bounded) for it to reach
    each alert's clip end. Returns how many clips were written."""
    if not started:
        return 0
    try:
        cameras = read_registry(cfg.kafka)
        index = SegmentIndex.from_config(cfg.redis)
        folder.mkdir(parents=True, exist_ok=True)
    except (UserError, OSError, redis.RedisError) as e:
        print(f"demo: no clips: {e}")
        return 0
    root = Path(cfg.recordings.dir)
    deadline = time.monotonic() + (_clip_wait_s(cameras, cfg.recordings) if wait else 0.0)
    print(f"\ndemo: each alert's clip (from its camera's recording; {folder}/):")
    written = 0
    for aid, (camera, rule) in started.items():
        name = f"  {camera:<10} {rule:<20} {aid}:"
        spec = cameras.get(camera)
        if spec is None or not spec.enabled or not spec.record.enabled:
            print(f"{name} no clip: camera {camera} has recording off")
            continue
        try:
            alert = store.get_alert(aid)
            if alert is None:
                print(f"{name} no clip: the alert expired from Redis")
                continue
            rng = alert_clip_range(cameras, alert, aid, time.time())
            while time.monotonic() < deadline and not _recorded_to(index, rng):
                time.sleep(0.5)
            result = write_clip(
                index,
                root,
                rng,
                folder / f"{camera}-{rule}-{aid}.mp4",
                cfg.recordings.gap_tolerance_s,
            )
        except ClipUnavailable:
            print(
                f"{name} no clip: nothing recorded from {_stamp(rng.start)} to {_stamp(rng.end)} "
                "(the recorder had not started this camera yet, or its recording paused)"
            )
            continue
        except (UserError, OSError, redis.RedisError) as e:
            print(f"{name} no clip: {e}")
            continue
        written += 1
        notes = [f"{b - a:.1f} s not recorded from {_stamp(a)}" for a, b in result.gaps]
        if rng.active:
            notes.append("the alert was still active")
        print(
            f"{name} {result.path}  ({result.duration:.1f} s"
            + "".join(f"; {n}" for n in notes)
            + ")"
        )
    return written


def _recorded_to(index: SegmentIndex, rng) -> bool:
    segs = index.segments(rng.camera_id, rng.start, rng.end)
    return bool(segs) and max(s.end for s in segs) >= rng.end


DEMO_USER = "demo"


@dataclass(frozen=True)
class DemoConsole:
    """The demo's console: where it is and how to log in."""

    server: ConsoleServer
    user: str
    password: str

    @property
    def url(self) -> str:
        return self.server.url


@contextlib.contextmanager
def demo_console(cfg, port: int) -> Iterator[DemoConsole | None]:
    """The console for this run (None when ``port`` is 0 or it cannot start), with an admin
    ``demo`` whose password is made now. The user is removed when the demo ends, however it
    ends (Ctrl-C, SIGTERM, an error): an admin with a printed password must not outlive the run."""
    if not port:
        yield None
        return
    users = UserStore(cfg.redis)
    password = secrets.token_urlsafe(12)
    users.add(DEMO_USER, password, "admin")
    server = None
    # SIGTERM (kill, a closed terminal's supervisor) ends the demo like Ctrl-C, through finally
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler) if main else None
    try:
        try:
            server = ConsoleServer(cfg, "127.0.0.1", port).start()
        except RuntimeError as e:
            print(f"demo: console not started: {e}")
        else:
            print(
                f"demo: console at {server.url}  (user {DEMO_USER}, password {password}, "
                "removed when the demo ends)"
            )
        yield DemoConsole(server, DEMO_USER, password) if server is not None else None
    finally:
        if server is not None:
            server.stop()
        try:
            users.remove(DEMO_USER)
        except redis.RedisError as e:
            print(
                f"demo: could not remove the console user {DEMO_USER} ({type(e).__name__}); "
                f"remove it: vigil users remove {DEMO_USER}"
            )
        else:
            print(f"demo: console user {DEMO_USER} removed")
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
