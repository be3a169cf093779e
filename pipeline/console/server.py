"""Run the console with uvicorn: on its own (``vigil console``) or as a thread of ``vigil run``."""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

import uvicorn

from pipeline.console.app import create_app

if TYPE_CHECKING:  # the root config imports this package's config section
    from pipeline.config import VigilConfig

log = logging.getLogger(__name__)


class ConsoleServer:
    """uvicorn in a thread, stopped by :meth:`stop` (or the ``stop`` event of ``vigil run``)."""

    def __init__(self, cfg: VigilConfig, host: str | None = None, port: int | None = None) -> None:
        cc = cfg.console
        self.host = host or cc.host
        self.port = port if port is not None else cc.port
        self.scheme = "https" if cc.tls else "http"
        self.app = create_app(cfg)
        self.server = uvicorn.Server(
            uvicorn.Config(
                self.app,
                host=self.host,
                port=self.port,
                log_level="warning",
                ssl_certfile=cc.tls_cert,
                ssl_keyfile=cc.tls_key,
                # X-Forwarded-For/-Proto only from console.trusted_proxies (uvicorn would
                # otherwise believe them from 127.0.0.1, e.g. any local process)
                proxy_headers=bool(cc.trusted_proxies),
                forwarded_allow_ips=list(cc.trusted_proxies) or None,
                timeout_graceful_shutdown=3,
            )
        )
        self.server.install_signal_handlers = lambda: None  # the caller owns the signals
        self._thread = threading.Thread(target=self.server.run, name="console", daemon=True)

    @property
    def url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}/"

    def start(self, timeout_s: float = 30.0) -> ConsoleServer:
        self._thread.start()
        deadline = threading.Event()
        for _ in range(int(timeout_s * 20)):
            if self.server.started or not self._thread.is_alive():
                break
            deadline.wait(0.05)
        if not self.server.started:
            raise RuntimeError(f"console did not start on {self.host}:{self.port} (port in use?)")
        log.info("console: %s", self.url)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self.server.should_exit = True
        self._thread.join(timeout_s)

    def run_until_stopped(self, stop: threading.Event) -> None:
        """For ``vigil run``'s service threads (the server already started): stop with ``stop``."""
        stop.wait()
        self.stop()
