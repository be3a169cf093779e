"""Hot reload over the real services: RTSP camera-sim -> worker -> Kafka, registry in Redis.

A worker streaming two cameras follows the registry: a promotion changes the model version on the
detection messages within seconds, with no gap in either camera's sequence beyond the swap; a model
that fails to load is refused and the old one keeps running; rollback goes back.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import defaultdict

import pytest

from detectors.retrain import drift
from detectors.retrain.model_registry import ModelRegistry
from pipeline.app import build_worker
from pipeline.cameras.registry import put_cameras
from pipeline.cameras.spec import CameraSpec
from pipeline.common.assets import model
from pipeline.common.kafka import ensure_topics
from tests.support.config import make_config
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration
YOLOV5N = model("yolov5n.pt")


@pytest.fixture
def reload_cfg(kafka_bootstrap, tmp_path, monkeypatch):
    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path / "cache"))
    cfg = make_config(
        kafka_bootstrap,
        detector={"imgsz": 320, "max_batch": 4},
        models={
            "registry": True,
            "store": str(tmp_path / "store"),
            "signing_key_file": str(tmp_path / "model-signing.key"),  # promotions sign with it
            "poll_interval_s": 1.0,
            "drift": {"publish_interval_s": 1.0, "min_frames": 5, "threshold": 0.25},
        },
    )
    ensure_topics(cfg.kafka)
    return cfg


def versions_by_camera(records) -> dict[str, list[dict]]:
    out = defaultdict(list)
    for r in records:
        out[r["key"]].append(r["value"])
    return out


def test_promotion_swaps_model_without_gaps_and_bad_model_is_refused(
    reload_cfg, camera_sim, topic_reader, tmp_path
):
    from detectors.loading import import_yolov5

    cfg = reload_cfg
    reg = ModelRegistry(cfg.redis, cfg.models)
    v1 = reg.register(YOLOV5N)
    reg.promote(v1.version, reason="initial")
    converted = import_yolov5(YOLOV5N, tmp_path / "yolov5n-converted.pt")  # same net, new file
    # a reference profile that cannot match: the drift report must say retraining is due
    v2 = reg.register(
        converted,
        profile={"frames": 100, "mean_conf": 0.9, "empty_rate": 0.0, "class_mix": {"car": 1.0}},
    )
    assert v2.version != v1.version
    assert (tmp_path / "model-signing.key").stat().st_mode & 0o077 == 0, "key readable by others"

    sim = camera_sim("people-detection.mp4", "classroom.mp4")
    put_cameras(
        cfg.kafka,
        [
            CameraSpec(id="hall", url=sim.urls["people-detection"], fps=4),
            CameraSpec(id="classroom", url=sim.urls["classroom"], fps=4),
        ],
    )
    worker = build_worker(cfg, worker_id="w-reload").start()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    try:
        assert worker.detector.version == v1.version, "worker starts on the production model"
        reader = topic_reader(cfg, cfg.kafka.topics.detections)

        def per_cam(version, n):
            def ok(records):
                cams = versions_by_camera(records)
                return all(
                    sum(m["model"]["version"] == version for m in cams[c]) >= n
                    for c in ("hall", "classroom")
                )

            return ok

        reader.until(per_cam(v1.version, 6), timeout_s=60)
        assert per_cam(v1.version, 6)(reader.records), "no detections with the first model"

        # The new model is held back once loaded, until the old one has served 3 more frames of
        # each camera captured after the load began: the worker kept going while a second model
        # loaded, whatever the machine's speed (no time limit on any gap).
        reloader = worker.services["hot_reload"]
        build = reloader._build
        load: dict[str, float] = {}
        served_meanwhile = threading.Event()

        def held_build(mv):
            if mv.version != v2.version:
                return build(mv)
            load["start"], t0 = time.time(), time.monotonic()
            load["worker_thread"] = threading.current_thread() is thread
            det = build(mv)
            load["seconds"] = time.monotonic() - t0
            load["held"] = served_meanwhile.wait(120)
            return det

        def old_model_since_load(records):
            if "start" not in load:
                return False
            cams = versions_by_camera(records)
            return all(
                sum(
                    m["model"]["version"] == v1.version and m["capture_ts"] > load["start"]
                    for m in cams[c]
                )
                >= 3
                for c in ("hall", "classroom")
            )

        reloader._build = held_build
        t_promote = time.time()
        reg.promote(v2.version, reason="test")
        reader.until(old_model_since_load, timeout_s=120)
        meanwhile = old_model_since_load(reader.records)
        served_meanwhile.set()
        assert "start" in load, "the promotion never reached the worker"
        assert load["worker_thread"] is False, "the model was loaded on the worker's thread"
        assert meanwhile, "the worker stopped serving while the new model loaded"
        reader.until(per_cam(v2.version, 6), timeout_s=60)
        assert per_cam(v2.version, 6)(reader.records), "the promotion never reached the worker"
        assert load["held"] is True

        cams = versions_by_camera(reader.records)
        for cid in ("hall", "classroom"):
            msgs = cams[cid]
            versions = [m["model"]["version"] for m in msgs]
            switch = versions.index(v2.version)
            assert set(versions[:switch]) == {v1.version}
            assert set(versions[switch:]) == {v2.version}, f"{cid}: went back to the old model"
            seqs = [m["seq"] for m in msgs]
            assert all(b > a for a, b in zip(seqs, seqs[1:], strict=False)), seqs
            assert {m["epoch"] for m in msgs} == {msgs[0]["epoch"]}, "camera restarted"
            ts = [m["capture_ts"] for m in msgs]
            gaps = [b - a for a, b in zip(ts, ts[1:], strict=False)]
            typical = statistics.median(gaps)
            swap_gap = ts[switch] - ts[switch - 1]
            print(
                f"\n{cid}: typical interval {typical:.2f} s, at the swap {swap_gap:.2f} s, "
                f"largest {max(gaps):.2f} s, loading the new model took {load['seconds']:.1f} s, "
                f"first new-model frame {msgs[switch]['publish_ts'] - t_promote:.1f} s "
                "after the promotion"
            )
            # the swap itself costs at most a few frame intervals, or (a new input shape
            # compiled on first use) less than loading the model took on this same machine
            bound = max(3 * typical, load["seconds"])
            assert swap_gap <= bound, f"{cid}: gap {swap_gap:.2f} s at the swap (bound {bound:.2f})"

        # a model that fails to load is refused; the old one keeps serving
        junk = tmp_path / "broken.pt"
        junk.write_bytes(b"\x00" * 1024)
        v3 = reg.register(junk, verify=False)
        reg.promote(v3.version, reason="broken on purpose")
        status = wait_for(lambda: reg.workers().get("w-reload", {}).get("status") == "refused", 30)
        assert status, reg.workers()
        assert worker.detector.version == v2.version
        n = len(reader.records)
        reader.until(lambda rs: len(rs) >= n + 8, timeout_s=20)
        later = reader.records[n:]
        assert len(later) >= 8, "detections stopped after a bad promotion"
        assert {m["value"]["model"]["version"] for m in later} == {v2.version}

        # drift: live output vs the (mismatched) reference profile of v2
        rows = wait_for(
            lambda: [r for r in drift.report(reg, 0.25, 5) if r.model_version == v2.version], 15
        )
        assert rows and all(r.due for r in rows), [r.reason for r in rows]
        assert "retraining due" in drift.format_report(rows)

        # rollback: v3 -> v2 (already running), v2 -> v1 (swapped back)
        assert reg.rollback().version == v2.version
        assert reg.rollback().version == v1.version
        n = len(reader.records)
        reader.until(
            lambda rs: sum(r["value"]["model"]["version"] == v1.version for r in rs[n:]) >= 4,
            timeout_s=30,
        )
        assert any(r["value"]["model"]["version"] == v1.version for r in reader.records[n:])
        assert worker.services["hot_reload"].refused == {
            v3.version: worker.services["hot_reload"].refused[v3.version]
        }
    finally:
        stop.set()
        thread.join(timeout=20)
        worker.close()


def test_worker_collects_frames_live_including_alert_frames(
    kafka_bootstrap, camera_sim, topic_reader, tmp_path, monkeypatch
):
    """collection.enabled: the worker samples frames into a dataset folder in the background,
    and the frame behind an alert (alerts topic + Redis frame store) is kept as 'alert'."""
    from detectors.retrain.dataset import Manifest
    from pipeline.common.kafka import make_producer

    monkeypatch.setenv("VIGIL_CACHE", str(tmp_path / "cache"))
    cfg = make_config(
        kafka_bootstrap,
        detector={"imgsz": 320, "max_batch": 4},
        collection={
            "enabled": True,
            "dir": str(tmp_path / "collected"),
            "policy": {"periodic_s": 1.0, "min_interval_s": 0.5, "dedup_distance": 0},
        },
    )
    ensure_topics(cfg.kafka)
    sim = camera_sim("people-detection.mp4", "classroom.mp4")
    put_cameras(
        cfg.kafka,
        [
            CameraSpec(id="hall", url=sim.urls["people-detection"], fps=4),
            CameraSpec(id="classroom", url=sim.urls["classroom"], fps=4),
        ],
    )
    worker = build_worker(cfg, worker_id="w-collect").start()
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,), daemon=True)
    thread.start()
    producer = make_producer(cfg.kafka, "test-alerts")
    try:
        reader = topic_reader(cfg, cfg.kafka.topics.detections)
        service = worker.services.get("collection")
        assert service is not None and service.alerts is not None

        def per_camera():
            m = Manifest.load(tmp_path / "collected").records.values()
            return {c: sum(r["camera"] == c for r in m) for c in ("hall", "classroom")}

        assert wait_for(lambda: min(per_camera().values()) >= 3, 40), per_camera()
        hit = reader.until(lambda rs: any(r["value"]["detections"] for r in rs), timeout_s=20)
        msg = next(r["value"] for r in hit if r["value"]["detections"])
        alert = {
            "status": "started",
            "id": "a" * 20,
            "camera_id": msg["camera_id"],
            "rule_id": "test-rule",
            "epoch": msg["epoch"],
            "frame_seq": msg["seq"],
            "updated_at": msg["capture_ts"],
        }

        def alert_saved():
            producer.send(cfg.kafka.topics.alerts, key=msg["camera_id"], value=alert).get(10)
            return service.alerts.saved

        assert wait_for(alert_saved, 30, step=2.0), "the alert frame was not collected"
        recs = Manifest.load(tmp_path / "collected").records.values()
        kept = [r for r in recs if "alert" in r["reasons"]]
        assert kept and kept[0]["alert"]["rule_id"] == "test-rule"
        assert kept[0]["camera"] == msg["camera_id"]
        assert service.hook.queue_full == 0
    finally:
        producer.close()
        stop.set()
        thread.join(timeout=20)
        worker.close()
