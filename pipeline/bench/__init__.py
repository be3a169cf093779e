"""``vigil bench``: the performance figures of BENCHMARKS.md, measured side by side in one run.

Sections (all on the shared footage, same model, image size and thresholds throughout):

* ``accuracy``: every backend's detections against ultralytics ``predict`` (the PyTorch
  reference) frame by frame: matched boxes IoU >= 0.9, same class, confidence within 0.05.
* ``detector``: detector-only throughput per backend and batch size (decoded frames in memory,
  batches mixing the cameras' resolutions; letterbox + inference + NMS, no tracking; the next
  batch starts before the previous one's NMS, as in the worker).
* ``pipeline``: the ingest worker with N cameras served over RTSP by the camera simulator, real
  Kafka: frames/s published (acknowledged), capture-to-acknowledgement latency p50/p99, per-camera
  share, dropped/stale frames, worker RSS; with and without motion gating.
* ``naive``: the obvious alternative in the same run: per camera a thread with its own
  ``YOLO(...)`` and a ``cap.read()`` / ``model.predict(frame)`` / ``producer.send`` loop.
* ``gating``: offline replay of a footage file at the camera's detection rate through tracking
  and the alert rules, with motion gating off and on: detector calls and the alerts of each.
* ``alerts``: capture-to-Redis latency of alert events with the detector at ``--alert-load`` of
  its capacity (cameras -> ingest -> Kafka -> alert service with snapshots -> Redis).

Cameras: real IP cameras send 25-30 frames/s; the clips are 10-17 frames/s, too slow for four of
them to saturate the detector. ``--camera-fps`` (default 30) serves re-timed copies: every frame
of the clip once, at that rate (encoded once with GStreamer's x264 and cached).

The sections are mixins of :class:`~pipeline.bench.runner.Bench`, one module each; the
footage, the detection matching, the process figures and the ratios have their own modules.
"""

from pipeline.bench.cli import cmd_bench, naive_child, register
from pipeline.bench.footage import replay_frames, sample_frames
from pipeline.bench.gating import compare_alerts, gating_replay
from pipeline.bench.matching import match_detections, merge_matches
from pipeline.bench.report import ratios
from pipeline.bench.runner import Bench
from pipeline.common.assets import CAMERA_FILES

__all__ = [
    "CAMERA_FILES",
    "Bench",
    "cmd_bench",
    "compare_alerts",
    "gating_replay",
    "match_detections",
    "merge_matches",
    "naive_child",
    "ratios",
    "register",
    "replay_frames",
    "sample_frames",
]
