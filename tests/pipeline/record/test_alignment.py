"""A time from an alert finds its frame in the recording: footage whose frames show a counter,
served by ``vigil camera-sim``, read side by side by the ingest worker's real capture (the code
that stamps ``capture_ts``) and by the recorder; the frame the recording places nearest each
``capture_ts`` shows the counter ingest saw (docs/recordings.md, "How exact")."""

from __future__ import annotations

import statistics
from collections import Counter

import av
import numpy as np
import pytest

from pipeline.camera_sim import CameraSim
from pipeline.cameras.spec import CameraSpec
from pipeline.ingest.capture import CameraReader
from pipeline.record.segmenter import Recorder
from tests.support.counter_footage import make_counter_footage, read_counter
from tests.support.net import free_port
from tests.support.waiting import wait_for

FRAME_S = 0.1  # the footage's 10 fps


def _recorded_frames(root, segments) -> list[list[tuple[float, int]]]:
    """Per segment, ``(time, counter)`` of each frame, time = segment start + PTS (the rule of
    docs/recordings.md), decoded by FFmpeg through PyAV."""
    out = []
    for seg in segments:
        with av.open(str(root / seg.path)) as c:
            vs = c.streams.video[0]
            frames = [(f.pts, read_counter(f.to_ndarray(format="bgr24"))) for f in c.decode(vs)]
        first = min(p for p, _ in frames)
        out.append(sorted((seg.start + float((p - first) * vs.time_base), n) for p, n in frames))
    return out


@pytest.mark.integration
def test_the_recording_shows_at_each_capture_ts_the_frame_ingest_stamped(tmp_path):
    footage = make_counter_footage(tmp_path / "counter.mp4", seconds=10)
    seen: list[tuple[int, float]] = []  # (counter, capture_ts) of each frame ingest decoded
    segments = []
    with CameraSim([str(footage)], port=free_port()) as sim:
        url = next(iter(sim.urls.values()))
        reader: CameraReader

        def on_frame(_camera: str) -> None:
            frame = reader.take()
            if frame is not None:
                seen.append((read_counter(frame.image), frame.capture_ts))

        # every frame converted (fps above the stream's), as ingest does at its detection rate
        reader = CameraReader(
            CameraSpec(id="cnt", url=url), fps=100, read_timeout_s=3, on_frame=on_frame
        )
        rec = Recorder(
            "cnt", url, tmp_path / "rec", segment_s=1, read_timeout_s=3, on_segment=segments.append
        )
        rec.start()
        reader.start()
        try:
            assert wait_for(lambda: len(segments) >= 3, timeout=20), (rec.stats, reader.stats)
        finally:
            reader.stop(join_timeout=3)
            rec.stop()
    per_segment = _recorded_frames(tmp_path / "rec", segments)

    # the recording holds every frame: counters contiguous within and across segments
    counters = [n for frames in per_segment for _, n in frames]
    assert counters == list(range(counters[0], counters[0] + len(counters))), counters

    recorded = [fr for frames in per_segment for fr in frames]
    times = np.array([t for t, _ in recorded])
    at = {n: t for t, n in recorded}
    diffs, offsets_ms = [], []
    for n, ts in seen:
        if not times[0] - FRAME_S / 2 <= ts <= times[-1] + FRAME_S / 2:
            continue  # ingest saw it before the recording began or after it ended
        nearest = recorded[int(np.argmin(np.abs(times - ts)))][1]
        diffs.append(nearest - n)
        if n in at:
            offsets_ms.append((at[n] - ts) * 1000)
    assert len(diffs) >= 20, (seen, recorded)
    summary = (
        f"counter differences {sorted(Counter(diffs).items())}; recorded time - capture_ts (ms): "
        f"median {statistics.median(offsets_ms):.1f}, min {min(offsets_ms):.1f}, "
        f"max {max(offsets_ms):.1f} over {len(diffs)} frames"
    )
    print(summary)
    # within one frame for every frame (on an idle machine: the same frame, a few ms apart)
    assert all(abs(d) <= 1 for d in diffs), summary
