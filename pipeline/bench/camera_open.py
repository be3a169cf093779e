"""Time until each of N camera-sim cameras delivers its first frame, all opened at once from
threads of one process (as an ingest worker does at start). BENCHMARKS.md, "Camera start-up".

    python3 -m pipeline.bench.camera_open [--probe-s 0.5]
"""

from __future__ import annotations

import argparse
import threading
import time

import cv2

from pipeline.camera_sim import CameraSim
from pipeline.common.assets import footage
from pipeline.ingest.capture import configure_ffmpeg

FILES = [
    "classroom.mp4",
    "people-detection.mp4",
    "one-by-one-person-detection.mp4",
    "car-detection.mp4",
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--probe-s", type=float, default=0.5)
    args = parser.parse_args()
    print("FFmpeg options:", configure_ffmpeg(args.probe_s))
    files = {f"c{i}": str(footage(name)) for i, name in enumerate(FILES)}
    with CameraSim(files, port=0) as sim:
        t0 = time.monotonic()
        took: dict[str, tuple[bool, float]] = {}

        def open_one(cid: str) -> None:
            cap = cv2.VideoCapture(sim.urls[cid], cv2.CAP_FFMPEG)
            ok, _ = cap.read()
            took[cid] = (ok, round(time.monotonic() - t0, 2))
            cap.release()

        threads = [threading.Thread(target=open_one, args=(cid,)) for cid in files]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    print("first frame (ok, seconds):", sorted(took.values(), key=lambda x: x[1]))


if __name__ == "__main__":
    main()
