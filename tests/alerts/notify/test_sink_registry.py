"""Sink types declare themselves: a module that holds a config model and a ``@register_sink``
class is all a new type needs. Here the module is this test: the type it defines is read from
``notify.sinks``, checked with its own keys, built and sent to, and nothing else was edited."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any, Literal

import pytest
from pydantic import SecretStr, field_validator

from alerts.notify.service import send_test
from alerts.notify.sinks import (
    SINK_CONFIGS,
    SINK_TYPES,
    Sink,
    SinkConfig,
    build_sink,
    register_sink,
)
from alerts.notify.sinks.base import Delivery, SinkContext, SinkError
from alerts.notify.sinks.mqtt import MqttSink, MqttSinkConfig
from alerts.notify.sinks.webhook import WebhookSink, WebhookSinkConfig
from pipeline.common.assets import REPO_ROOT
from pipeline.common.config import ConfigError
from pipeline.config import VigilConfig, parse_config

TOKEN = "echo-token-0123456789"


@pytest.fixture
def echo_sink():
    """A sink type defined here, registered for the test and taken out again after it (after a
    config was read: what was composed before a type registers must not hide it)."""
    _notify({"id": "ha", "type": "mqtt", "url": "mqtt://h"})

    class EchoSinkConfig(SinkConfig):
        type: Literal["echo"]
        channel: str
        token: SecretStr | None = None
        fail: bool = False

        @field_validator("channel")
        @classmethod
        def _channel(cls, v: str) -> str:
            if not v.startswith("#"):
                raise ValueError(f"{v!r}: a channel starts with '#'")
            return v

    @register_sink
    class EchoSink(Sink):
        kind = "echo"
        config_model = EchoSinkConfig
        sent: list[dict[str, Any]] = []

        def send(self, d: Delivery) -> str:
            if self.cfg.fail:
                raise SinkError(f"refused with {self.cfg.token.get_secret_value()}", permanent=True)
            self.sent.append(d.alert)
            return f"echoed to {self.cfg.channel}"

        def where(self) -> str:
            return f"echo:{self.cfg.channel}"

        def secrets(self) -> list[str]:
            return [self.cfg.token.get_secret_value()] if self.cfg.token else []

    yield EchoSink
    SINK_TYPES.pop("echo", None)
    SINK_CONFIGS.pop("echo", None)


def _notify(*sinks: dict[str, Any]) -> Any:
    return parse_config({"notify": {"sinks": list(sinks)}}, "vigil.yaml")


def test_a_sink_defined_in_a_test_registers_and_parses(echo_sink):
    cfg = _notify(
        {"id": "hook", "type": "webhook", "url": "https://h/x", "secret": "s" * 16},
        {"id": "echo", "type": "echo", "channel": "#ops", "min_severity": "high"},
    )
    hook, echo = cfg.notify.sinks
    assert isinstance(hook, WebhookSinkConfig)
    assert type(echo) is echo_sink.config_model
    assert echo.channel == "#ops" and echo.min_severity == "high"  # the shared keys too
    assert echo.retry.attempts == 8 and echo.statuses == ["started", "ended", "clip"]
    sink = build_sink(echo, SinkContext())
    assert type(sink) is echo_sink and sink.describe() == "echo sink 'echo' (echo:#ops)"
    alert = {"id": "a1", "camera_id": "c", "rule_id": "r", "status": "started"}
    assert sink.send(Delivery(alert, b"", "a1:started")) == "echoed to #ops"
    assert echo_sink.sent == [alert]


def test_a_registered_sink_reports_bad_keys_like_the_built_in_ones(echo_sink):
    with pytest.raises(ConfigError) as e:
        _notify({"id": "echo", "type": "echo", "channel": "ops", "chanel": "#x"})
    msg = str(e.value)
    assert "notify.sinks.0.echo.channel: Value error, 'ops': a channel starts with '#'" in msg
    assert "notify.sinks.0.echo.chanel: unknown key" in msg
    with pytest.raises(ConfigError) as e:
        _notify({"id": "x", "type": "smtp"})
    assert "expected tags: 'mqtt', 'webhook', 'echo'" in str(e.value)


def test_vigil_notify_test_reaches_a_registered_sink(echo_sink):
    cfg = _notify(
        {"id": "ok", "type": "echo", "channel": "#ops"},
        {"id": "bad", "type": "echo", "channel": "#ops", "token": TOKEN, "fail": True},
    )
    assert send_test(cfg, "ok") == (True, "echoed to #ops")
    ok, detail = send_test(cfg, "bad")
    assert not ok and TOKEN not in detail and "refused with ***" in detail


def test_the_type_is_gone_once_unregistered():
    assert "echo" not in SINK_TYPES
    with pytest.raises(ConfigError, match="Input tag 'echo'"):
        _notify({"id": "echo", "type": "echo", "channel": "#ops"})


def test_built_in_sinks_hold_their_config_models():
    assert SINK_TYPES["webhook"] is WebhookSink and SINK_TYPES["mqtt"] is MqttSink
    assert SINK_CONFIGS["webhook"] is WebhookSinkConfig and SINK_CONFIGS["mqtt"] is MqttSinkConfig
    for kind, cls in SINK_TYPES.items():
        assert cls.config_model.__module__ == cls.__module__, kind
    # the config's JSON schema still documents each type's keys
    defs = VigilConfig.model_json_schema()["$defs"]
    assert "secret" in defs["WebhookSinkConfig"]["properties"]
    assert "discovery_prefix" in defs["MqttSinkConfig"]["properties"]


def test_register_sink_refuses_a_mismatch():
    class OtherConfig(SinkConfig):
        type: Literal["other"]

    class NoKind(Sink):
        config_model = OtherConfig

    class Mismatch(Sink):
        kind = "not-other"
        config_model = OtherConfig

    class Taken(Sink):
        kind = "webhook"
        config_model = WebhookSinkConfig

    with pytest.raises(ValueError, match="has no 'kind'"):
        register_sink(NoKind)
    with pytest.raises(ValueError, match=r'needs type: Literal\["not-other"\]'):
        register_sink(Mismatch)
    with pytest.raises(ValueError, match="'webhook' is taken by alerts.notify.sinks.webhook"):
        register_sink(Taken)
    assert SINK_TYPES["webhook"] is WebhookSink and "not-other" not in SINK_TYPES


def test_the_documented_example_registers():
    """The example of docs/notify.md ("A new sink type"), run as written."""
    text = (REPO_ROOT / "docs" / "notify.md").read_text()
    section = text[text.index("## A new sink type") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    ns: dict[str, Any] = {"__name__": "ntfy_sink"}
    try:
        # dont_inherit: the docs have no `from __future__ import annotations`, nor does this run
        exec(compile(code, "docs/notify.md ntfy", "exec", dont_inherit=True), ns)  # noqa: S102
        cfg = _notify({"id": "phone", "type": "ntfy", "url": "https://ntfy.example/vigil"})
        sink = build_sink(cfg.notify.sinks[0], SinkContext())
        assert type(sink) is ns["NtfySink"] and SINK_TYPES["ntfy"] is ns["NtfySink"]
        assert sink.describe() == "ntfy sink 'phone' (https://ntfy.example)"
    finally:
        SINK_TYPES.pop("ntfy", None)
        SINK_CONFIGS.pop("ntfy", None)


def test_reading_the_config_does_not_import_the_mqtt_client():
    """Every command reads the config (MQTT sinks included); paho loads when one publishes."""
    code = (
        "import json, sys\n"
        "from pipeline.config import VigilConfig, parse_config\n"
        "cfg = parse_config({'notify': {'sinks': [{'id': 'ha', 'type': 'mqtt', 'url': 'mqtt://h'}]}})\n"
        "print(json.dumps([cfg.notify.sinks[0].port, 'paho' in sys.modules]))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=env, capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert json.loads(p.stdout.splitlines()[-1]) == [1883, False]
