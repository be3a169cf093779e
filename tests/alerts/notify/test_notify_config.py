"""The ``notify:`` section: bad sinks are one clear error naming the key (in the words of the
rest of the config: ``notify.sinks.<i>.<type>.<key>: ...``), secrets never printed."""

from __future__ import annotations

import pytest

from alerts.notify.sinks.mqtt import MqttSinkConfig
from alerts.notify.sinks.webhook import WebhookSinkConfig
from pipeline.common.config import ConfigError
from pipeline.config import load_config, parse_config

SECRET = "0123456789abcdef-secret"


def errors(sinks: list[dict], **notify) -> str:
    with pytest.raises(ConfigError) as e:
        parse_config({"notify": {"sinks": sinks, **notify}}, "vigil.yaml")
    return str(e.value)


def test_defaults_and_types():
    cfg = parse_config(
        {
            "notify": {
                "sinks": [
                    {
                        "id": "ops",
                        "type": "webhook",
                        "url": "https://h.example/x",
                        "secret": SECRET,
                    },
                    {"id": "ha", "type": "mqtt", "url": "mqtts://broker.lan", "prefix": "cams"},
                ]
            }
        }
    )
    hook, ha = cfg.notify.sinks
    assert isinstance(hook, WebhookSinkConfig) and isinstance(ha, MqttSinkConfig)
    assert hook.statuses == ["started", "ended", "clip"] and hook.min_severity == "info"
    assert hook.retry.attempts == 8 and hook.timeout_s == 5.0
    assert ha.prefix == "cams/" and ha.port == 8883 and ha.use_tls
    assert cfg.notify.group_id == "vigil-notify" and cfg.notify.auto_offset_reset == "latest"
    assert parse_config({}).notify.sinks == []
    assert cfg.kafka.topics.notify_dlq == "vigil.notify.dlq"


def test_unknown_sink_type_names_the_key_and_the_types():
    msg = errors([{"id": "x", "type": "smtp", "url": "smtp://h"}])
    assert "notify.sinks.0: Input tag 'smtp'" in msg
    # the registered types, in the order their modules are found (by name)
    assert "expected tags: 'mqtt', 'webhook'" in msg


@pytest.mark.parametrize(
    "url, reason",
    [
        ("ftp://h/x", "must be an http:// or https:// URL, got scheme 'ftp'"),
        ("hooks.example/x", "must be an http:// or https:// URL, got no scheme"),
        ("https:///x", "must be an http:// or https:// URL with a host"),
        ("https://h:99999/x", "not a valid URL"),
    ],
)
def test_bad_webhook_url(url, reason):
    msg = errors([{"id": "x", "type": "webhook", "url": url, "secret": SECRET}])
    assert f"notify.sinks.0.webhook.url: {reason}" in msg


def test_bad_url_error_does_not_quote_the_url():
    # a Slack webhook URL is a secret in itself
    msg = errors([{"id": "x", "type": "webhook", "url": "htps://h/T000/B000/XXXXsecretXXXX"}])
    assert "XXXXsecretXXXX" not in msg


def test_missing_or_short_secret():
    msg = errors([{"id": "x", "type": "webhook", "url": "https://h/x"}])
    assert "notify.sinks.0.webhook.secret: required for a json webhook" in msg
    msg = errors([{"id": "x", "type": "webhook", "url": "https://h/x", "secret": "short"}])
    assert "notify.sinks.0.webhook.secret: at least 16 characters" in msg
    assert "short" not in msg.split("secret:", 1)[1].replace("at least", "")
    # Slack does not check signatures: no secret needed there
    cfg = parse_config(
        {
            "notify": {
                "sinks": [{"id": "x", "type": "webhook", "url": "https://h/x", "format": "slack"}]
            }
        }
    )
    assert cfg.notify.sinks[0].secret is None


def test_bad_mqtt_settings():
    msg = errors(
        [
            {"id": "a", "type": "mqtt", "url": "tcp://h"},
            {"id": "b", "type": "mqtt", "url": "mqtt://u:pw@h"},
            {"id": "c", "type": "mqtt", "url": "mqtt://h", "prefix": "vigil/#"},
            {"id": "d", "type": "mqtt", "url": "mqtt://h", "password": "pw"},
        ]
    )
    assert "notify.sinks.0.mqtt.url: must be an mqtt:// or mqtts:// URL, got scheme 'tcp'" in msg
    assert "notify.sinks.1.mqtt.url: put the user and password in username / password" in msg
    assert "pw@" not in msg
    assert "notify.sinks.2.mqtt.prefix: 'vigil/#': no '+', '#'" in msg
    assert "notify.sinks.3.mqtt: Value error, password: give username too" in msg


def test_unknown_keys_duplicates_and_filters():
    msg = errors(
        [{"id": "x", "type": "webhook", "url": "https://h/x", "secret": SECRET, "retires": 3}]
    )
    assert "notify.sinks.0.webhook.retires: unknown key" in msg
    msg = errors(
        [
            {"id": "x", "type": "mqtt", "url": "mqtt://h"},
            {"id": "x", "type": "mqtt", "url": "mqtt://h2"},
        ]
    )
    assert "notify.sinks: duplicate sink id 'x'" in msg
    msg = errors(
        [
            {
                "id": "x",
                "type": "mqtt",
                "url": "mqtt://h",
                "statuses": ["started", "opened"],
                "min_severity": "urgent",
                "cameras": [],
            }
        ]
    )
    assert "notify.sinks.0.mqtt.statuses.1" in msg
    assert "notify.sinks.0.mqtt.min_severity" in msg
    assert "notify.sinks.0.mqtt.cameras" in msg
    assert "notify.grup_id: unknown key" in errors([], grup_id="x")


def test_secrets_never_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    path = tmp_path / "vigil.yaml"
    path.write_text(
        "notify:\n"
        "  sinks:\n"
        "    - {id: ops, type: webhook, url: 'https://h/x', secret: '${HOOK_SECRET}',\n"
        "       headers: {Authorization: 'Bearer tok-0123456789'}}\n"
        "    - {id: ha, type: mqtt, url: 'mqtt://h', username: u, password: pw-0123456789}\n"
    )
    cfg = load_config(path)
    assert cfg.notify.sinks[0].secret.get_secret_value() == SECRET
    text = repr(cfg) + str(cfg.notify) + cfg.model_dump_json()
    for s in (SECRET, "tok-0123456789", "pw-0123456789"):
        assert s not in text


def test_filters_match():
    hook = WebhookSinkConfig(
        id="x",
        type="webhook",
        url="https://h/x",
        secret=SECRET,
        cameras=["lobby"],
        min_severity="medium",
        statuses=["started", "reviewed"],
    )
    base = {"camera_id": "lobby", "rule_id": "r", "severity": "high", "status": "started"}
    assert hook.matches(base)
    assert not hook.matches({**base, "camera_id": "yard"})
    assert not hook.matches({**base, "severity": "low"})
    assert not hook.matches({**base, "status": "ended"})
    assert hook.matches({**base, "status": "reviewed", "severity": "critical"})
