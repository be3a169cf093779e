"""Camera reader behaviour on recorded footage and on unreachable cameras (no services needed)."""

from __future__ import annotations

import logging
import os
import random
import socket
import time

import cv2
import pytest

from pipeline.cameras.spec import CameraSpec
from pipeline.common.assets import footage
from pipeline.ingest.capture import CameraReader, backoff_delays
from pipeline.ingest.config import IngestConfig


def wait_for(pred, timeout: float, step: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(step)
    return pred()


def test_file_reader_latest_frame_semantics():
    path = footage("people-detection.mp4")
    if not path.exists():
        pytest.fail(f"footage missing: {path} (set VIGIL_ASSETS)")
    started = time.monotonic()
    published: list[int] = []  # seq of every frame the reader handed over, in order

    def on_frame(_camera_id: str) -> None:  # called by the reader thread right after publishing
        published.append(reader._seq)

    reader = CameraReader(CameraSpec(id="hall", url=str(path)), fps=50, on_frame=on_frame)
    reader.start()
    frames = []
    try:
        # a consumer slower than the reader, whatever the machine's speed: it takes a frame only
        # once the reader has published two since the last take (one taken, one overwritten)
        while reader.alive or reader.pending_since() is not None:
            n = len(published)
            wait_for(lambda n=n: len(published) >= n + 2 or not reader.alive, 30, step=0.01)
            newest = published[-1] if published else None
            f = reader.take()
            if f is not None:
                frames.append(f)
                # the newest frame, not the oldest one waiting: overwrite, never queue
                assert f.seq >= newest, (f.seq, newest, published)
    finally:
        reader.stop(join_timeout=2)
    assert frames, "no frame delivered"
    assert all(f.image.shape == (270, 480, 3) for f in frames)
    seqs = [f.seq for f in frames]
    assert seqs == sorted(set(seqs)), "sequence numbers must only increase"
    s = reader.stats
    assert s.frames_decoded == 23
    assert s.state == "finished"
    assert len(published) >= 2
    assert len(frames) < len(published) and s.frames_dropped > 0
    # every frame published was either delivered or counted as dropped, none twice
    assert s.frames_delivered == len(frames)
    assert s.frames_delivered + s.frames_dropped == len(published)
    # the reader thread's own CPU (decoding): some, and no more than the time it ran
    assert 0 < s.decode_cpu_s < time.monotonic() - started


def test_unreachable_camera_retries_with_backoff():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = CameraSpec(id="gone", url=f"rtsp://user:pw@127.0.0.1:{port}/cam")
    reader = CameraReader(
        spec, fps=5, open_timeout_s=1, backoff_initial_s=0.1, backoff_max_s=0.2
    ).start()
    try:
        assert wait_for(lambda: reader.stats.state == "backoff", 10), reader.stats
        assert reader.take() is None
        assert reader.alive, "an unreachable camera must keep retrying, not end the reader"
        assert "cannot open" in (reader.stats.last_error or "")
    finally:
        reader.stop(join_timeout=5)
    assert not reader.alive


def test_backoff_grows_and_is_capped():
    delays = backoff_delays(0.5, 4.0, 0.0, random.Random(1))
    assert [next(delays) for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = backoff_delays(1.0, 8.0, 0.2, random.Random(1))
    values = [next(jittered) for _ in range(3)]
    assert 0.8 <= values[0] <= 1.2 and 1.6 <= values[1] <= 2.4


@pytest.mark.parametrize("threads, expected", [(1, 1), (3, 3)])
def test_decoder_thread_count_is_applied(threads, expected):
    path = footage("people-detection.mp4")
    reader = CameraReader(CameraSpec(id="hall", url=str(path)), fps=5, decode_threads=threads)
    cap = reader._open()
    try:
        assert cap is not None
        assert cap.get(cv2.CAP_PROP_N_THREADS) == expected
    finally:
        cap.release()


def retry_lines(caplog) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == "pipeline.ingest.capture" and r.levelno == logging.DEBUG
    ]


def test_an_outage_is_one_log_line_and_no_library_noise(caplog, capfd):
    """Defect: a warning per reconnect attempt, plus FFmpeg/OpenCV lines on stderr for each."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = CameraSpec(id="flaky", url=f"rtsp://127.0.0.1:{port}/cam")
    with caplog.at_level(logging.DEBUG, logger="pipeline.ingest.capture"):
        reader = CameraReader(
            spec, fps=5, open_timeout_s=1, backoff_initial_s=0.05, backoff_max_s=0.1
        ).start()
        try:
            assert wait_for(lambda: reader.stats.state == "backoff", 10)
            # the attempts go on, quietly (a debug line each): wait for three of them
            assert wait_for(lambda: len(retry_lines(caplog)) >= 3, 30), caplog.records
        finally:
            reader.stop(join_timeout=5)
    lines = [r for r in caplog.records if r.name == "pipeline.ingest.capture"]
    warnings = [r for r in lines if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "retrying every 0.1 s at most" in warnings[0].getMessage()
    assert len(retry_lines(caplog)) >= 3
    err = capfd.readouterr().err
    assert "Connection refused" not in err and "cap_ffmpeg" not in err, err[-500:]


def test_reconnect_cap_is_low_by_default():
    assert IngestConfig().reconnect.max_s <= 2.0


def test_stream_probe_is_short_and_configurable(monkeypatch):
    """Defect: OpenCV opens one capture at a time per process and FFmpeg probed each live stream
    for 2-3 s, so the 12th camera of a worker waited ~36 s. The probe is ingest.probe_s now."""
    from pipeline.ingest import capture  # noqa: PLC0415

    monkeypatch.setattr(capture, "_USER_CAPTURE_OPTIONS", None)
    monkeypatch.setattr(capture, "_probe_s", capture._probe_s)
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "")
    whitelist = f"protocol_whitelist;{capture.ANY_CAMERA_PROTOCOLS}"
    assert IngestConfig().probe_s == 0.5
    assert (
        capture.configure_ffmpeg(0.25) == f"rtsp_transport;tcp|analyzeduration;250000|{whitelist}"
    )
    assert "analyzeduration;250000|" in os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"]
    monkeypatch.setattr(capture, "_USER_CAPTURE_OPTIONS", "rtsp_transport;udp")
    # the user's own choice wins, the protocol whitelist stays (unless they set their own)
    assert capture.configure_ffmpeg(0.25) == f"rtsp_transport;udp|{whitelist}"
    monkeypatch.setattr(capture, "_USER_CAPTURE_OPTIONS", "protocol_whitelist;file,tcp")
    assert capture.configure_ffmpeg(0.25) == "protocol_whitelist;file,tcp"
