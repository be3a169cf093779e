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
    docs/recordings.md), decoded by FFmpeg through PyAV; the frames the segment counts (one cut
    by the stop may hold a frame sent ahead of frames that never came, shown after its end)."""
    out = []
    for seg in segments:
        with av.open(str(root / seg.path)) as c:
            vs = c.streams.video[0]
            frames = [(f.pts, read_counter(f.to_ndarray(format="bgr24"))) for f in c.decode(vs)]
        first = min(p for p, _ in frames)
        timed = sorted((seg.start + float((p - first) * vs.time_base), n) for p, n in frames)
        out.append([(t, n) for t, n in timed if t < seg.end - FRAME_S / 2])
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
    # the frames ingest stamped while the recording ran
    compared = [
        (n, ts) for n, ts in seen if times[0] - FRAME_S / 2 <= ts <= times[-1] + FRAME_S / 2
    ]
    assert len(compared) >= 20, (seen, recorded)
    # how late ingest stamped each frame after the stream's own cadence, judged by its quickest
    # (a frame is stamped once decoded: a busy machine delays a stamp, never advances it)
    base = min(ts - n * FRAME_S for n, ts in compared)
    late = [ts - n * FRAME_S - base for n, ts in compared]
    diffs = [recorded[int(np.argmin(np.abs(times - ts)))][1] - n for n, ts in compared]
    offsets_ms = [(at[n] - ts) * 1000 for n, ts in compared if n in at]
    summary = (
        f"counter differences {sorted(Counter(diffs).items())}; recorded time - capture_ts (ms): "
        f"median {statistics.median(offsets_ms):.1f}, min {min(offsets_ms):.1f}, "
        f"max {max(offsets_ms):.1f} over {len(diffs)} frames; ingest's stamps late by "
        f"{sorted(round(x * 1000) for x in late)[-3:]} ms at most"
    )
    print(summary)
    # every frame ingest stamped on time: the recording shows it there, within one frame (on an
    # idle machine: the same frame, a few ms apart) ...
    prompt = [d for d, x in zip(diffs, late, strict=True) if x <= FRAME_S / 2]
    assert len(prompt) >= 0.75 * len(diffs), summary
    assert all(abs(d) <= 1 for d in prompt), summary
    # ... and a frame stamped late shows there the frame that was live when it was stamped
    assert all(abs(d - round(x / FRAME_S)) <= 1 for d, x in zip(diffs, late, strict=True)), summary
