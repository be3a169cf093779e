"""``vigil demo``: the whole chain on recorded footage, printing each alert as it lands.

camera-sim (RTSP) -> ingest + detector -> Kafka -> alert service -> Redis, all real; the demo
only watches the Redis alert stream, saves each snapshot to disk and prints a summary.
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
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import redis

from alerts.service import alert_service_runner
from alerts.store import AlertStore
from alerts.subscribe import subscribe
from pipeline.camera_sim import CameraSim
from pipeline.common.assets import REPO_ROOT, footage
from pipeline.common.kafka import ensure_topics
from pipeline.config import load_config
from pipeline.console.auth import UserStore
from pipeline.console.server import ConsoleServer

log = logging.getLogger(__name__)

DEMO_FILES = ("one-by-one-person-detection.mp4", "classroom.mp4")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the whole chain on the demo footage and print alerts")
    p.add_argument("-c", "--config", default=str(REPO_ROOT / "examples" / "demo.yaml"))
    p.add_argument("--seconds", type=float, default=100.0, help="how long the pipeline runs")
    p.add_argument("--port", type=int, default=8554, help="RTSP port of the camera simulator")
    p.add_argument("-o", "--out", default="demo-output", help="where snapshots are saved")
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_topics(cfg.kafka)
    store = AlertStore(cfg.redis)

    with demo_console(cfg, args.console_port) as console:
        return _run(args, cfg, console, alert_service, store, out, run_ingest)


def _run(args, cfg, console, alert_service, store, out, run_ingest) -> int:
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
            max_seconds=args.seconds,
            sync_cameras=True,
            extra_services=[alert_service],
        ),
        name="demo-pipeline",
        daemon=True,
    )
    started = time.monotonic()
    pipeline_thread.start()
    print(
        f"demo: pipeline running for {args.seconds:.0f} s (Ctrl-C stops early); alerts as they land:\n"
    )
    counts: collections.Counter[tuple[str, str, str]] = collections.Counter()
    latencies: list[float] = []
    snapshots = 0
    try:
        while pipeline_thread.is_alive() or not alerts.empty():
            try:
                alert = alerts.get(timeout=0.5)
            except queue.Empty:
                continue
            counts[(alert["camera_id"], alert["rule_id"], alert["status"])] += 1
            snap = "-"
            if alert["status"] == "started":
                jpeg = store.get_snapshot(alert["id"])
                if jpeg:
                    path = out / f"{alert['camera_id']}-{alert['rule_id']}-{alert['id']}.jpg"
                    path.write_bytes(jpeg)
                    snap = str(path)
                    snapshots += 1
                stored = store.get_alert(alert["id"]) or {}
                if stored.get("latency_ms") is not None:
                    latencies.append(float(stored["latency_ms"]))
            when = (
                alert.get("started_at") if alert["status"] == "started" else alert.get("ended_at")
            )
            extra = f" count={alert['count']}" if alert.get("count") is not None else ""
            print(
                f"  {_stamp(when)}  {alert['status']:<7} {alert['camera_id']:<10} {alert['rule_id']:<20} "
                f"{alert.get('label') or '-':<8} {alert.get('severity', ''):<6}{extra}  snapshot: {snap}",
                flush=True,
            )
    except KeyboardInterrupt:
        print("\ndemo: stopping")
    finally:
        stop.set()
        pipeline_thread.join(timeout=30)
        sim.stop()

    elapsed = time.monotonic() - started
    print(f"\ndemo: summary after {elapsed:.0f} s")
    if not counts:
        print("  no alerts (check the camera-sim and detector logs above)")
    for camera, rule in sorted({(c, r) for c, r, _ in counts}):
        print(
            f"  {camera:<10} {rule:<20} started {counts[(camera, rule, 'started')]:>3}  "
            f"ended {counts[(camera, rule, 'ended')]:>3}"
        )
    if latencies:
        latencies.sort()
        p50 = latencies[len(latencies) // 2]
        print(
            f"  capture-to-Redis latency: p50 {p50:.0f} ms, max {latencies[-1]:.0f} ms ({len(latencies)} alerts)"
        )
    print(f"  snapshots saved: {snapshots} in {out}/")
    if console is not None and args.linger:
        print(f"demo: console still at {console.url} (Ctrl-C ends it)")
        with contextlib.suppress(KeyboardInterrupt):
            threading.Event().wait()
    return 0 if counts else 1


DEMO_USER = "demo"


@contextlib.contextmanager
def demo_console(cfg, port: int) -> Iterator[ConsoleServer | None]:
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
        yield server
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
