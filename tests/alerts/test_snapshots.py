"""Snapshot drawing (alerts/snapshots.py): pure image work, no services (unit tests; the Redis
side of snapshots is in test_store.py and test_service.py)."""

from __future__ import annotations

import cv2
import numpy as np

from alerts.snapshots import alert_label, draw_alert, render_snapshot
from tests.support.alert_events import alert_event as _event
from tests.support.alert_events import plain_jpeg as _jpeg
from tests.support.snapshot_oracle import assert_snapshot


def test_snapshot_drawing():
    frame = _jpeg(320, 180, value=90)
    alert = _event()
    out = render_snapshot(frame, alert)
    img = cv2.imdecode(np.frombuffer(out, np.uint8), cv2.IMREAD_COLOR)
    assert img is not None and img.shape == (180, 320, 3)
    # The box in the severity colour, the label band above it, the picture everywhere else.
    original = cv2.imdecode(np.frombuffer(frame, np.uint8), cv2.IMREAD_COLOR)
    assert_snapshot(
        img, original, alert["box"], alert_label(alert), alert["severity"], alert["zone"]
    )
    assert render_snapshot(b"not a jpeg", alert) is None
    # No box (e.g. a count anomaly): the frame with the label only.
    plain = draw_alert(np.zeros((50, 80, 3), np.uint8), None, "r: x")
    assert plain.shape == (50, 80, 3)


def test_crowding_snapshot_outlines_every_counted_object():
    frame = _jpeg(320, 180, value=90)
    counted = [[0.1, 0.2, 0.2, 0.6], [0.5, 0.2, 0.6, 0.6], [0.7, 0.3, 0.8, 0.7]]
    alert = dict(_event(), box=None, confidence=None, count=3, label="person")
    alert["details"] = {"min_count": 3, "boxes": counted}
    img = cv2.imdecode(np.frombuffer(render_snapshot(frame, alert), np.uint8), cv2.IMREAD_COLOR)
    for x1, y1, _, y2 in counted:  # each left edge, halfway down, in the severity colour
        y, x = round((y1 + y2) / 2 * 179), round(x1 * 319)
        edge = img[y - 5 : y + 5, x - 1 : x + 2].reshape(-1, 3).mean(axis=0)
        assert edge[2] > 180 and edge[0] < 80, (x1, edge)
    assert abs(int(img[100, 100][0]) - 90) < 15  # between the boxes the picture is kept
    assert alert_label(alert).endswith("person x 3")
