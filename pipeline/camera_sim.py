"""Simulated IP cameras: footage files served as looping live RTSP streams.

The server itself (``deploy/local/rtsp_server.py``) needs GStreamer's Python bindings, which live
in the system Python (``/usr/bin/python3``, override with ``VIGIL_GST_PYTHON``), not in the
project's environment; :class:`CameraSim` runs it as a child process and waits until it listens.

    with CameraSim(["people-detection.mp4", "lobby=classroom.mp4"], port=8554) as sim:
        cv2.VideoCapture(sim.urls["people-detection"], cv2.CAP_FFMPEG)
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from urllib.parse import urlsplit

from pipeline.common.assets import REPO_ROOT, footage
from pipeline.common.errors import UserError

SERVER_SCRIPT = REPO_ROOT / "deploy" / "local" / "rtsp_server.py"
DEFAULT_GST_PYTHON = "/usr/bin/python3"
DEFAULT_PORT = 8554
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 5.0
STDERR_LINES_KEPT = 200

log = logging.getLogger(__name__)


class CameraSimError(UserError, RuntimeError):
    """The simulator could not start; the message carries the server's own explanation."""


def gst_python() -> str:
    """The interpreter with python3-gi and gst-rtsp-server (Debian's, unless overridden)."""
    return os.environ.get("VIGIL_GST_PYTHON") or DEFAULT_GST_PYTHON


def resolve_file(name: str | Path) -> Path:
    """A local path if it exists, else the same name in the shared footage directory."""
    path = Path(name).expanduser()
    if path.is_file():
        return path.resolve()
    if len(path.parts) == 1 and footage(path.name).is_file():
        return footage(path.name)
    raise CameraSimError(f"{name}: no such file (also looked in {footage('')})")


def source_args(files: Iterable[str | Path] | Mapping[str, str | Path]) -> list[str]:
    """Server arguments: ``FILE`` (served under its stem) or ``NAME=FILE``."""
    if isinstance(files, Mapping):
        return [f"{name}={resolve_file(path)}" for name, path in files.items()]
    args = []
    for item in files:
        text = str(item)
        name, sep, rest = text.partition("=")
        if isinstance(item, str) and sep and not Path(text).exists():
            args.append(f"{name}={resolve_file(rest)}")
        else:
            args.append(str(resolve_file(item)))
    if not args:
        raise CameraSimError("no files to serve")
    return args


def child_env() -> dict[str, str]:
    """The system Python must not pick up this environment's packages."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}


def parse_ready(line: str) -> dict[str, str]:
    """``READY url url ...`` -> {mount name: url}."""
    return {url.rsplit("/", 1)[-1]: url for url in line.split()[1:]}


class CameraSim:
    """A running RTSP camera simulator; a context manager that stops it on exit.

    ``port=0`` lets the server pick a free port; a later :meth:`start` reuses the same one, so a
    reader can reconnect to the same URL after a restart.
    """

    def __init__(
        self,
        files: Iterable[str | Path] | Mapping[str, str | Path],
        port: int = DEFAULT_PORT,
        bind: str = "127.0.0.1",
        *,
        reencode: bool = False,
        ready_timeout: float = READY_TIMEOUT_S,
        echo_stderr: bool = False,
    ) -> None:
        self.sources = source_args(files)
        self.port = port
        self.bind = bind
        self.reencode = reencode
        self.ready_timeout = ready_timeout
        self.echo_stderr = echo_stderr
        self.urls: dict[str, str] = {}
        self._proc: subprocess.Popen[str] | None = None
        self._stderr: collections.deque[str] = collections.deque(maxlen=STDERR_LINES_KEPT)
        self._stderr_thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    @property
    def messages(self) -> list[str]:
        """The server's latest stderr lines (clients coming and going, errors)."""
        return list(self._stderr)

    @property
    def pid(self) -> int | None:
        """The server process (CPU accounting in the bench)."""
        return self._proc.pid if self.running else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """The server's command line (``--exit-with-stdin``: it dies with us, never orphaned)."""
        cmd = [gst_python(), str(SERVER_SCRIPT), "--port", str(self.port), "--bind", self.bind]
        cmd.append("--exit-with-stdin")
        if self.reencode:
            cmd.append("--reencode")
        return [*cmd, *self.sources]

    def start(self) -> CameraSim:
        """Launch the server and block until it listens (or raise CameraSimError)."""
        if self.running:
            return self
        self._stderr.clear()
        try:
            self._proc = subprocess.Popen(
                self.command(),
                stdin=subprocess.PIPE,  # closed when we die: the server then exits too
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=child_env(),
                start_new_session=True,  # Ctrl-C reaches us, and we stop it in order
            )
        except OSError as e:
            raise CameraSimError(
                f"cannot run {gst_python()} (set VIGIL_GST_PYTHON to a Python with python3-gi "
                f"and gst-rtsp-server): {e}"
            ) from e
        self._stderr_thread = threading.Thread(target=self._drain_stderr, daemon=True)
        self._stderr_thread.start()
        try:
            self.urls = parse_ready(self._wait_ready())
        except BaseException:
            self.stop()
            raise
        self.port = urlsplit(next(iter(self.urls.values()))).port or self.port  # for port=0
        log.info("camera simulator ready: %s", " ".join(self.urls.values()))
        return self

    def _wait_ready(self) -> str:
        """The READY line, within ready_timeout; otherwise an error quoting the server."""
        assert self._proc is not None and self._proc.stdout is not None
        deadline = time.monotonic() + self.ready_timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self._proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not sel.select(timeout=left):
                    continue
                line = self._proc.stdout.readline()
                if line.startswith("READY "):
                    return line.strip()
                if not line:  # stdout closed: the server exited
                    self._proc.wait(timeout=STOP_TIMEOUT_S)
                    raise CameraSimError(self._failure(f"exited with code {self._proc.returncode}"))
        raise CameraSimError(self._failure(f"not ready within {self.ready_timeout:.0f} s"))

    def _failure(self, what: str) -> str:
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=1.0)
        if self.echo_stderr:
            return f"RTSP camera simulator {what} (its messages are above)"
        details = "\n".join(self._stderr) or "(no output)"
        return f"RTSP camera simulator {what}:\n{details}"

    def _drain_stderr(self) -> None:
        """Keep the pipe flowing (a full pipe would stall the server) and the tail for errors."""
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            line = line.rstrip("\n")
            self._stderr.append(line)
            if self.echo_stderr:
                print(line, file=sys.stderr, flush=True)
            else:
                log.debug("%s", line)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, then SIGKILL if it does not exit within ``timeout`` seconds."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                log.warning("camera simulator ignored SIGTERM for %.0f s; killing it", timeout)
                proc.kill()
                proc.wait(timeout=timeout)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()
        if self._stderr_thread is not None:
            self._stderr_thread.join(timeout=timeout)
        if proc.stderr is not None:
            proc.stderr.close()

    def wait(self) -> int:
        """Block until the server exits on its own (the foreground CLI); its exit code."""
        if self._proc is None:
            raise CameraSimError("camera simulator is not running")
        return self._proc.wait()

    def __enter__(self) -> CameraSim:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


# -- vigil camera-sim ---------------------------------------------------------------------------


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "camera-sim",
        help="serve video files as looping live RTSP cameras",
        description=(
            "Serve each FILE at rtsp://BIND:PORT/<file stem> (or /NAME for NAME=FILE), looping "
            "forever at the file's own frame rate. Bare names that are not local files are looked "
            "up in the shared footage directory (VIGIL_ASSETS). Stop with Ctrl-C."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="[NAME=]FILE", help="video files to serve")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="RTSP port (default 8554)")
    parser.add_argument("--bind", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--reencode", action="store_true", help="decode and re-encode with x264 even for H.264"
    )
    parser.set_defaults(func=run_foreground)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    """Unwind like Ctrl-C, so the ``with`` block stops the server (exit code 128 + 15)."""
    sys.exit(128 + signum)


def run_foreground(args: argparse.Namespace) -> int:
    """Serve until Ctrl-C or SIGTERM (or until the server dies, whose exit code is returned)."""
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        sim = CameraSim(
            args.files, port=args.port, bind=args.bind, reencode=args.reencode, echo_stderr=True
        )
        with sim:
            for url in sim.urls.values():
                print(url, flush=True)
            code = sim.wait()
    except CameraSimError as e:
        print(f"vigil camera-sim: {e}", file=sys.stderr)
        return 2
    if code != 0:
        print(f"vigil camera-sim: server exited with code {code}", file=sys.stderr)
    return code
