"""The operator's review through the console (``POST /api/alerts/{id}/review``, docs/console.md
"Reviews", docs/retraining.md "Reviewed examples"), against the real local Kafka and Redis with
the console served by uvicorn on a free port:

- Kafka away: 503 with the review already kept; sending it again publishes it;
- an alert whose frame is gone: the review is kept without a dataset image, and the answer says so;
- a true positive: the alert's box confirmed, every other label kept, the record a human label.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml

from alerts.engine import RuleEngine
from alerts.store import AlertStore, AlertWrite
from detectors.retrain.dataset.layout import label_path, write_data_yaml
from detectors.retrain.dataset.manifest import Manifest
from detectors.retrain.dataset.statistics import stats
from pipeline.config import parse_config
from pipeline.console.server import ConsoleServer
from tests.support.console import PASSWORD, ConsoleStack, console_stack
from tests.support.messages import det_message
from tests.support.net import free_port

pytestmark = pytest.mark.integration

ZONE = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
CLASSES = {0: "person", 1: "car"}
PERSON_BOX = [0.2, 0.2, 0.5, 0.9]
CAR_BOX = [0.6, 0.5, 0.9, 0.8]


@pytest.fixture(scope="module")
def stack(kafka_bootstrap, tmp_path_factory) -> Iterator[ConsoleStack]:
    """A console on the test's own topics, Redis prefix and dataset folder (with ``data.yaml``)."""
    with console_stack(
        kafka_bootstrap,
        tmp_path_factory.mktemp("console"),
        roles=("viewer", "operator"),
        collection={"dir": str(tmp_path_factory.mktemp("dataset"))},
    ) as s:
        write_data_yaml(s.cfg.collection.dir, CLASSES)
        yield s


def login_at(base: str) -> httpx.Client:
    """The operator logged in to another console on the same Redis (its users are there)."""
    c = httpx.Client(base_url=base, timeout=60)
    r = c.post("/api/login", json={"username": "operator", "password": PASSWORD})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return c


def jpeg(value: int = 70, w: int = 320, h: int = 240) -> bytes:
    img = np.full((h, w, 3), value, np.uint8)
    cv2.rectangle(img, (60, 40), (160, 220), (200, 200, 200), -1)
    return cv2.imencode(".jpg", img)[1].tobytes()


def write_alert(
    cfg, dets: list[dict], alert_box: list[float], source: bytes | None
) -> tuple[dict, str]:
    """A started alert of a fresh camera as the alert service stores it: the snapshot, and for
    the review the frame as the camera saw it (``source``, None: expired or never written) and
    the frame's detections. Returns (the alert message, the camera id)."""
    cam = f"rev{uuid.uuid4().hex[:6]}"
    engine = RuleEngine({"rules": [{"id": "rev-zone", "type": "zone_intrusion", "zone": ZONE}]})
    person = {"class_id": 0, "label": "person", "confidence": 0.9, "box": alert_box}
    ts = time.time() - 5
    events = engine.process(det_message(cam, int(ts * 1000), 1, ts, [person]))
    assert [e.status for e in events] == ["started"]
    ev = events[0].to_dict()
    frame_dets = [
        {"label": d["label"], "confidence": d["confidence"], "box": d["box"], "track_id": None}
        for d in dets
    ]
    AlertStore(cfg.redis).write_alert(
        AlertWrite(ev, ts, snapshot=jpeg(40), source=source, frame_detections=frame_dets)
    )
    return ev, cam


def reviewed_messages(reader, alert_id: str, n: int, timeout_s: float = 20) -> list[dict]:
    """The ``reviewed`` messages of ``alert_id`` on the reader's topic, once ``n`` are there (or the
    time is up), and whatever else arrives within a short drain."""

    def mine(recs: list[dict]) -> list[dict]:
        return [
            x
            for x in recs
            if (x["value"] or {}).get("status") == "reviewed" and x["value"]["id"] == alert_id
        ]

    reader.until(lambda recs: len(mine(recs)) >= n, timeout_s)
    reader.poll(1.0)  # a duplicate would be right behind
    return mine(reader.records)


def labels(root: Path, image: str) -> list[list[float]]:
    """The YOLO label lines of ``image``: ``[class, cx, cy, w, h]``, sorted."""
    lines = label_path(root, image).read_text().splitlines()
    return sorted([float(v) for v in line.split()] for line in lines)


def yolo(cls: int, box: list[float]):
    """A normalised xyxy box as the YOLO label line it should become."""
    x1, y1, x2, y2 = box
    return pytest.approx([cls, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], abs=1e-5)


def dataset_records(cfg, alert_id: str) -> list[dict]:
    """The dataset's manifest records made from ``alert_id``'s frame."""
    records = Manifest.load(cfg.collection.dir).records.values()
    return [r for r in records if (r.get("review") or {}).get("alert_id") == alert_id]


def test_review_kept_while_kafka_is_away_is_published_when_sent_again(stack, topic_reader):
    """docs/console.md: "Kafka away: 503, and the review (steps 1-2) is already kept; sending it
    again publishes it"."""
    cfg = stack.cfg
    ev, cam = write_alert(cfg, [], PERSON_BOX, source=jpeg())
    reader = topic_reader(cfg, cfg.kafka.topics.reviews)
    body = {"verdict": "true_positive", "note": "the night guard"}

    # the same console (same Redis, dataset and topics) with its Kafka away
    down = yaml.safe_load(Path(stack.config_file).read_text())
    down["kafka"].update(
        bootstrap_servers="127.0.0.1:1", bootstrap_timeout_ms=1000, request_timeout_ms=1000
    )
    down["console"]["port"] = free_port()
    server = ConsoleServer(parse_config(down, "test")).start()
    try:
        r = login_at(server.url.rstrip("/")).post(f"/api/alerts/{ev['id']}/review", json=body)
    finally:
        server.stop()
    assert r.status_code == 503, r.text
    detail = r.json()["detail"]
    assert "Kafka" in detail and "127.0.0.1:1" in detail
    # the answer must not tell the operator that nothing happened: the review stands
    assert "nothing was changed" not in detail and "review is kept" in detail, detail

    op = stack.login("operator")
    kept = op.get(f"/api/alerts/{ev['id']}").json()
    assert (kept["review"], kept["review_note"], kept["reviewed_by"]) == (
        "true_positive",
        "the night guard",
        "operator",
    )
    image = kept["review_image"]
    assert image and (Path(cfg.collection.dir) / image).is_file()

    # Kafka is there again: the same review, sent again, reaches subscribers (once)
    r = op.post(f"/api/alerts/{ev['id']}/review", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["review_image"] == image  # one example per alert: replaced, not added
    got = reviewed_messages(reader, ev["id"], 1)
    assert len(got) == 1, got
    msg = got[0]
    assert msg["key"] == cam
    assert msg["value"]["review"] == {
        "verdict": "true_positive",
        "note": "the night guard",
        "by": "operator",
        "at": r.json()["reviewed_at"],
    }
    assert len(dataset_records(cfg, ev["id"])) == 1


def test_review_of_an_alert_without_its_frame_is_kept_without_a_dataset_image(stack, topic_reader):
    """docs/console.md: an alert without a source frame "keeps the review without a dataset
    image, and the response says so"; subscribers are told as for any review, on the reviews
    topic and never on the alerts topic."""
    cfg = stack.cfg
    ev, _ = write_alert(
        cfg, [{"label": "person", "confidence": 0.9, "box": PERSON_BOX}], PERSON_BOX, None
    )
    reader = topic_reader(cfg, cfg.kafka.topics.reviews)
    alerts_reader = topic_reader(cfg, cfg.kafka.topics.alerts)
    root = Path(cfg.collection.dir)
    files_before = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.jsonl")

    op = stack.login("operator")
    r = op.post(f"/api/alerts/{ev['id']}/review", json={"verdict": "false_positive", "note": "x"})
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["review"] == "false_positive" and out["review_image"] is None
    assert "frame" in out["dataset"] and "review is kept" in out["dataset"], out["dataset"]
    stored = op.get(f"/api/alerts/{ev['id']}").json()
    assert stored["review"] == "false_positive" and stored["reviewed_by"] == "operator"
    assert stored["review_image"] is None
    # the dataset is unchanged: no image, no label file, no record
    files_after = sorted(p for p in root.rglob("*") if p.is_file() and p.name != "manifest.jsonl")
    assert files_after == files_before
    assert dataset_records(cfg, ev["id"]) == []
    got = reviewed_messages(reader, ev["id"], 1)
    assert [m["value"]["review"]["verdict"] for m in got] == ["false_positive"]
    # on the console's own topic only: the console may not write alerts (docs/security.md)
    assert reviewed_messages(alerts_reader, ev["id"], 1, timeout_s=0.5) == []


def test_true_positive_review_confirms_the_alert_box_and_keeps_every_label(stack, topic_reader):
    """docs/retraining.md "Reviewed examples": a true positive keeps every detection and marks the
    alert's box confirmed (added as a label when no detection matches it); the record is a human
    label (``source: review``) that `vigil dataset stats` counts."""
    cfg = stack.cfg
    root = Path(cfg.collection.dir)
    before = stats(root)["reviewed"]
    dets = [
        {"label": "person", "confidence": 0.9, "box": PERSON_BOX},
        {"label": "car", "confidence": 0.6, "box": CAR_BOX},
    ]
    frame = jpeg(90)
    ev, cam = write_alert(cfg, dets, PERSON_BOX, frame)
    # a second alert whose frame has no matching detection (the model's box was elsewhere)
    lone, _ = write_alert(
        cfg, [{"label": "car", "confidence": 0.6, "box": CAR_BOX}], PERSON_BOX, frame
    )
    reader = topic_reader(cfg, cfg.kafka.topics.reviews)

    op = stack.login("operator")
    r = op.post(f"/api/alerts/{ev['id']}/review", json={"verdict": "true_positive", "note": "yes"})
    assert r.status_code == 200, r.text
    image = r.json()["review_image"]
    assert image and image in r.json()["dataset"]
    # the frame as the camera saw it, unchanged
    assert (root / image).read_bytes() == frame
    # every detection stays a label, with data.yaml's class ids
    assert labels(root, image) == [yolo(0, PERSON_BOX), yolo(1, CAR_BOX)]
    (rec,) = dataset_records(cfg, ev["id"])
    assert rec["image"] == image and rec["camera"] == cam
    assert (rec["source"], rec["reasons"], rec["label_source"]) == ("review", ["review"], "human")
    review = rec["review"]
    assert (review["verdict"], review["reviewer"], review["note"]) == (
        "true_positive",
        "operator",
        "yes",
    )
    assert review["boxes_reviewed"] == 1
    assert {b["label"]: b["status"] for b in review["boxes"]} == {
        "person": "confirmed",
        "car": "model",
    }
    stored = op.get(f"/api/alerts/{ev['id']}").json()
    assert stored["review"] == "true_positive" and stored["review_image"] == image

    # no detection matches the alert's box: the box itself becomes a confirmed person label
    r = op.post(f"/api/alerts/{lone['id']}/review", json={"verdict": "true_positive"})
    assert r.status_code == 200, r.text
    assert labels(root, r.json()["review_image"]) == [yolo(0, PERSON_BOX), yolo(1, CAR_BOX)]
    (lone_rec,) = dataset_records(cfg, lone["id"])
    assert [(b["label"], b["status"]) for b in lone_rec["review"]["boxes"]] == [
        ("car", "model"),
        ("person", "confirmed"),
    ]

    after = stats(root)["reviewed"]
    assert after["true_positive"] == before["true_positive"] + 2
    assert after["false_positive"] == before["false_positive"]
    assert after["boxes"] == before["boxes"] + 4
    got = reviewed_messages(reader, ev["id"], 1)
    assert [m["value"]["review"]["verdict"] for m in got] == ["true_positive"]
