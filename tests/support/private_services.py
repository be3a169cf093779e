"""Private service instances for tests that stop, pause or restart a service.

A test that takes a broker or Redis away must not take it from every other test: it starts its
own instance with deploy/local/services.sh (the same script `make test` uses) in a state dir of
its own and on free ports, and stops it at the end. Everything binds to 127.0.0.1.

    with PrivateService("kafka", tmp_path) as kafka:
        cfg = make_config(kafka.address)
        ...
        kafka.stop(); kafka.start()   # the outage, hurting nobody else
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.net import free_port

SERVICES = Path(__file__).resolve().parents[2] / "deploy" / "local" / "services.sh"

# service -> (services.sh action suffix, the environment variables naming its ports)
_PORTS = {
    "kafka": ("kafka", ("VIGIL_KAFKA_PORT", "VIGIL_KAFKA_CONTROLLER_PORT")),
    "redis": ("redis", ("VIGIL_REDIS_PORT",)),
    "mqtt": ("mqtt", ("VIGIL_MQTT_PORT",)),
}


class PrivateService:
    """One Kafka broker, Redis server or mosquitto broker of the calling test's own."""

    def __init__(self, kind: str, state_dir: Path, *, timeout_s: float = 120) -> None:
        if kind not in _PORTS:
            raise ValueError(f"unknown service {kind!r}: one of {sorted(_PORTS)}")
        self.kind = kind
        self.state_dir = Path(state_dir) / f"private-{kind}"
        self.timeout_s = timeout_s
        action, port_vars = _PORTS[kind]
        self._action = action
        self._env = {
            **os.environ,
            "VIGIL_STATE": str(self.state_dir),
            # the single-broker, no-ACL profile, whatever the session's services run
            "KAFKA_NODES": "1",
            "VIGIL_REDIS_ACL": "0",
            "PYTHON": os.environ.get("PYTHON", sys.executable),
        }
        ports = [free_port() for _ in port_vars]
        self._env.update({var: str(p) for var, p in zip(port_vars, ports, strict=True)})
        self.port = ports[0]

    @property
    def address(self) -> str:
        """host:port for Kafka's bootstrap servers and the MQTT sink."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        """redis://... for Redis."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _run(self, verb: str) -> None:
        proc = subprocess.run(
            ["bash", str(SERVICES), f"{verb}-{self._action}"],
            env=self._env,
            capture_output=True,
            text=True,
            timeout=self.timeout_s,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"services.sh {verb}-{self._action} (private {self.kind} on port {self.port}) "
                f"failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )

    def start(self) -> PrivateService:
        """Start (or start again after stop(): same ports, same data)."""
        self._run("start")
        return self

    def stop(self) -> None:
        self._run("stop")

    def __enter__(self) -> PrivateService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
