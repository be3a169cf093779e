"""The RTSP camera simulator, read by OpenCV's FFmpeg backend exactly like a real IP camera."""

from __future__ import annotations

import functools
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.camera_sim import SERVER_SCRIPT, CameraSim, CameraSimError, gst_python
from pipeline.common.assets import footage

PORTS = range(18554, 18601)  # other agents and `make demo` use 8554
OPEN_TIMEOUT_MS = 15_000
READ_TIMEOUT_MS = 10_000


# --- helpers -------------------------------------------------------------------------------------


def free_port() -> int:
    """A port in the test range that nothing listens on right now."""
    for port in random.sample(PORTS, len(PORTS)):
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail(f"no free port in {PORTS.start}-{PORTS.stop - 1}")


def footage_file(name: str) -> Path:
    path = footage(name)
    if not path.is_file():
        pytest.fail(f"footage {path} missing: set VIGIL_ASSETS to the shared assets folder")
    return path


def file_frames(path: Path) -> tuple[list[np.ndarray], float]:
    """All frames of a local file and its frame rate, from its own container."""
    cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
    try:
        frames = []
        while (result := cap.read())[0]:
            frames.append(result[1])
        assert frames, f"cannot read {path}"
        return frames, cap.get(cv2.CAP_PROP_FPS)
    finally:
        cap.release()


def open_rtsp(url: str) -> cv2.VideoCapture:
    """Open like the pipeline opens a camera: FFmpeg backend, RTSP over TCP, bounded waits."""
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        OPEN_TIMEOUT_MS,
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        READ_TIMEOUT_MS,
    ]
    return cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)


def read_frames(url: str, count: int) -> tuple[list[np.ndarray], float]:
    """``count`` frames from a fresh connection, and the seconds from opening to the last one."""
    start = time.monotonic()
    cap = open_rtsp(url)
    try:
        assert cap.isOpened(), f"cannot open {url}"
        frames = []
        for i in range(count):
            ok, frame = cap.read()
            assert ok, f"{url}: read failed after {i} frames"
            frames.append(frame)
        return frames, time.monotonic() - start
    finally:
        cap.release()


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(np.abs(a.astype(np.int16) - b.astype(np.int16))))


@pytest.fixture(autouse=True)
def rtsp_over_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """OpenCV reads FFmpeg options from the environment when a capture opens."""
    monkeypatch.setenv("OPENCV_FFMPEG_CAPTURE_OPTIONS", "rtsp_transport;tcp")


@functools.cache
def _gstreamer_problem() -> str | None:
    check = "import gi; gi.require_version('GstRtspServer', '1.0')"
    try:
        subprocess.run([gst_python(), "-c", check], check=True, capture_output=True, timeout=30)
    except (OSError, subprocess.CalledProcessError) as e:
        return (
            f"{gst_python()} lacks GStreamer's RTSP server bindings ({e}): install python3-gi "
            "gir1.2-gst-rtsp-server-1.0 or set VIGIL_GST_PYTHON"
        )
    return None


@pytest.fixture(autouse=True)
def gstreamer_python(request: pytest.FixtureRequest) -> None:
    """The server needs the system Python's GStreamer bindings; say so clearly if absent (the
    tests that start no server need none)."""
    if request.node.get_closest_marker("integration") and (problem := _gstreamer_problem()):
        pytest.fail(problem)


@pytest.fixture
def sim() -> Iterator[CameraSim]:
    files = [footage_file("people-detection.mp4"), footage_file("classroom.mp4")]
    with CameraSim(files, port=free_port()) as running:
        yield running


# --- streaming -----------------------------------------------------------------------------------


@pytest.mark.integration
def test_urls_are_named_after_the_files(sim: CameraSim) -> None:
    assert sim.urls == {
        "people-detection": f"rtsp://127.0.0.1:{sim.port}/people-detection",
        "classroom": f"rtsp://127.0.0.1:{sim.port}/classroom",
    }
    assert PORTS.start <= sim.port < PORTS.stop


@pytest.mark.integration
@pytest.mark.parametrize("name", ["people-detection", "classroom"])
def test_stream_loops_at_real_time_with_the_file_frames(sim: CameraSim, name: str) -> None:
    originals, fps = file_frames(footage_file(f"{name}.mp4"))
    count = 2 * len(originals) + 10  # more than the file has: only a loop can deliver them
    frames, seconds = read_frames(sim.urls[name], count)

    assert all(f.shape == (270, 480, 3) for f in frames), {f.shape for f in frames}
    # Live pacing: a server that dumped the file as fast as it could would take ~0 s. A lower
    # bound only (no machine is too fast for it); a stream that stalls fails its read after
    # READ_TIMEOUT_MS, and a slow shared machine says nothing about the server.
    real_time = (count - 1) / fps
    assert seconds > 0.6 * real_time, (seconds, real_time)
    # Passthrough, no re-encoding: the first reader of a fresh stream gets exactly the file's
    # pictures in order, pass after pass.
    diffs = [mean_abs_diff(f, originals[i % len(originals)]) for i, f in enumerate(frames)]
    assert max(diffs) < 1.0, diffs


@pytest.mark.integration
def test_several_readers_share_one_stream(sim: CameraSim) -> None:
    url = sim.urls["people-detection"]
    caps = [open_rtsp(url), open_rtsp(url)]
    try:
        assert all(c.isOpened() for c in caps)
        for _ in range(30):
            for c in caps:
                ok, frame = c.read()
                assert ok and frame.shape == (270, 480, 3)
        started = [m for m in sim.messages if "/people-detection: media started" in m]
        assert len(started) == 1, sim.messages  # both readers are fed by one pipeline
    finally:
        for c in caps:
            c.release()
    frames, _ = read_frames(url, 5)  # and a client that comes after both left
    assert len(frames) == 5


@pytest.mark.integration
def test_reencode_fallback_streams_too() -> None:
    with CameraSim(
        {"cam-x264": footage_file("people-detection.mp4")}, port=free_port(), reencode=True
    ) as s:
        frames, _ = read_frames(s.urls["cam-x264"], 30)
    assert all(f.shape == (270, 480, 3) for f in frames)


# --- outages and restarts ------------------------------------------------------------------------


@pytest.mark.integration
def test_restart_on_the_same_port_serves_new_readers(sim: CameraSim) -> None:
    url = sim.urls["classroom"]
    old = open_rtsp(url)
    try:
        assert old.read()[0]
        sim.stop()
        deadline = time.monotonic() + READ_TIMEOUT_MS / 1000 + 10
        while old.read()[0]:  # frames FFmpeg had buffered, then the failure
            assert time.monotonic() < deadline, "reads kept succeeding after the server stopped"
    finally:
        old.release()

    time.sleep(5)
    sim.start()
    assert sim.urls["classroom"] == url
    frames, _ = read_frames(url, 20)
    assert len(frames) == 20


@pytest.mark.integration
def test_stop_is_idempotent_and_context_exit_stops(sim: CameraSim) -> None:
    sim.stop()
    sim.stop()
    assert not sim.running
    with sim:
        assert sim.running
    assert not sim.running


# --- errors --------------------------------------------------------------------------------------


def test_missing_file_is_named_in_the_error() -> None:
    with pytest.raises(CameraSimError, match="no-such-clip.mp4: no such file"):
        CameraSim(["no-such-clip.mp4"], port=free_port())


@pytest.mark.integration
def test_server_rejects_a_missing_file_with_a_clear_message(tmp_path: Path) -> None:
    missing = tmp_path / "gone.mp4"
    cmd = [gst_python(), str(SERVER_SCRIPT), "--port", str(free_port()), str(missing)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert f"{missing}: no such file" in result.stderr
    assert "READY" not in result.stdout


@pytest.mark.integration
def test_port_in_use_is_a_clear_error() -> None:
    port = free_port()
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", port))
        blocker.listen()
        sim = CameraSim([footage_file("classroom.mp4")], port=port, ready_timeout=30)
        with pytest.raises(CameraSimError, match=f"port {port} already in use"):
            sim.start()
        assert not sim.running


@pytest.mark.integration
def test_file_that_is_not_video_is_named(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.mp4"
    bogus.write_text("not a video\n")
    with pytest.raises(CameraSimError, match="notes.mp4"):
        CameraSim([bogus], port=free_port(), ready_timeout=60).start()
