"""MQTT sink (paho-mqtt 2.x): alert events for Home Assistant and anything else on a broker.

Topics, under ``prefix`` (default ``vigil/``):

- ``vigil/alerts``: every alert event as JSON (not retained);
- ``vigil/<camera>/<rule>/state``: ``ON`` while an alert of that rule is open on that camera,
  ``OFF`` when the last one ended (retained); ``.../attributes``: the latest event (retained);
- ``vigil/<camera>/snapshot``: the JPEG of the camera's latest started alert (retained);
- ``vigil/<camera>/availability``: ``online`` while the camera streams (read from Redis, the
  ingest worker's ``camera_status``), else ``offline`` (retained);
- ``vigil/available``: ``online`` while this notifier is connected, ``offline`` (its will) when
  it is gone (retained);
- Home Assistant discovery (``homeassistant/...``, retained): a binary sensor per camera/rule
  and an image entity per camera, grouped in one device per camera.

A delivery is acknowledged when the broker acknowledged every message of it (QoS 1 default).
Events go out in order per camera (one worker): ``ON`` can never overtake its ``OFF``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

import redis
from pydantic import Field, SecretStr, field_validator, model_validator

from alerts.notify.sinks.base import Delivery, Sink, SinkContext, SinkError, register_sink
from alerts.notify.sinks.config import SinkConfig, bad, check_url
from pipeline.common.config import StrictModel
from pipeline.common.jsoncodec import dumps_text
from pipeline.common.lifecycle import OutageLog

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt

# paho is imported where the sink runs, not here: every `vigil` command reads the config, and so
# this module's config model, and most never publish to MQTT

log = logging.getLogger(__name__)

_OBJECT_ID = re.compile(r"[^A-Za-z0-9_-]")
_TOPIC_BAD = re.compile(r"[+#\x00]")


class MqttTls(StrictModel):
    """TLS to the broker (``mqtts://`` turns it on with the system's CAs)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = Field(False, description="skip the host name check (self-signed test rigs)")


class MqttSinkConfig(SinkConfig):
    type: Literal["mqtt"]
    url: str = Field(description="mqtt://host[:1883] or mqtts://host[:8883]")
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = Field(None, description="default vigil-notify-<host>-<pid>")
    prefix: str = Field("vigil/", description="topic prefix: <prefix>alerts, <prefix><camera>/...")
    qos: Literal[0, 1, 2] = 1
    keepalive_s: int = Field(30, ge=5, le=3600)
    timeout_s: float = Field(10.0, gt=0, le=300, description="connect and acknowledgements")
    tls: MqttTls | None = None
    discovery: bool = Field(True, description="Home Assistant MQTT discovery messages")
    discovery_prefix: str = "homeassistant"
    availability_interval_s: float = Field(
        10.0, ge=1, le=3600, description="how often camera availability is read from Redis"
    )

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        check_url(v, ("mqtt", "mqtts"))
        if "@" in urlsplit(v).netloc:
            raise bad("bad_url", "put the user and password in username / password, not the URL")
        return v

    @field_validator("prefix", "discovery_prefix")
    @classmethod
    def _topic(cls, v: str) -> str:
        if _TOPIC_BAD.search(v) or v.startswith("/"):
            raise bad("bad_prefix", f"{v!r}: no '+', '#' or leading '/' in a topic prefix")
        return v

    @field_validator("prefix")
    @classmethod
    def _slash(cls, v: str) -> str:
        return v if not v or v.endswith("/") else v + "/"

    @model_validator(mode="after")
    def _pair(self) -> MqttSinkConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password: give username too")
        return self

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme.lower() == "mqtts" else 1883)

    @property
    def use_tls(self) -> bool:
        return self.tls is not None or urlsplit(self.url).scheme.lower() == "mqtts"


def object_id(text: str) -> str:
    """Home Assistant discovery ids allow ``[A-Za-z0-9_-]`` only."""
    return _OBJECT_ID.sub("_", text)


@register_sink
class MqttSink(Sink):
    kind = "mqtt"
    config_model = MqttSinkConfig
    cfg: MqttSinkConfig

    def __init__(self, cfg: MqttSinkConfig, ctx: SinkContext) -> None:
        super().__init__(cfg, ctx)
        self.prefix = cfg.prefix
        self._client: mqtt.Client | None = None
        self._connected = threading.Event()
        self._closing = threading.Event()
        self._last_error = "not connected yet"
        self._state = OutageLog(log, self.describe())
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], set[str]] = {}  # open alert ids per (camera, rule)
        self._announced: set[tuple[str, str]] = set()
        self._cameras: set[str] = set()
        self._availability: dict[str, str] = {}
        self._snapshots: dict[str, bytes] = {}  # per camera: republished after a broker restart
        self._avail_thread: threading.Thread | None = None
        for camera, rule in ctx.known_pairs:
            self._announced.add((camera, rule))
            self._cameras.add(camera)

    # -- topics ---------------------------------------------------------------------------------

    @property
    def available_topic(self) -> str:
        return f"{self.prefix}available"

    def state_topic(self, camera: str, rule: str) -> str:
        return f"{self.prefix}{camera}/{rule}/state"

    def attributes_topic(self, camera: str, rule: str) -> str:
        return f"{self.prefix}{camera}/{rule}/attributes"

    def snapshot_topic(self, camera: str) -> str:
        return f"{self.prefix}{camera}/snapshot"

    def camera_availability_topic(self, camera: str) -> str:
        return f"{self.prefix}{camera}/availability"

    def _availability_list(self, camera: str) -> list[dict[str, str]]:
        out = [{"topic": self.available_topic}]
        if self.ctx.store is not None:  # camera availability is known only with Redis
            out.append({"topic": self.camera_availability_topic(camera)})
        return out

    def _device(self, camera: str) -> dict[str, Any]:
        return {
            "identifiers": [f"vigil_{camera}"],
            "name": f"Vigil {camera}",
            "manufacturer": "Vigil",
            "model": "camera",
        }

    def discovery(self, camera: str, rule: str | None) -> tuple[str, dict[str, Any]]:
        """(topic, payload) of the discovery message of a camera/rule binary sensor, or of the
        camera's snapshot image entity when ``rule`` is None."""
        dp = self.cfg.discovery_prefix
        node = object_id(f"vigil_{camera}")
        common = {
            "device": self._device(camera),
            "availability": self._availability_list(camera),
            "availability_mode": "all",
            "origin": {"name": "Vigil"},
        }
        if rule is None:
            return f"{dp}/image/{node}/snapshot/config", {
                "name": "Last alert snapshot",
                "unique_id": f"vigil_{camera}_snapshot",
                "image_topic": self.snapshot_topic(camera),
                "content_type": "image/jpeg",
                **common,
            }
        return f"{dp}/binary_sensor/{node}/{object_id(rule)}/config", {
            "name": rule,
            "unique_id": f"vigil_{camera}_{rule}",
            "state_topic": self.state_topic(camera, rule),
            "payload_on": "ON",
            "payload_off": "OFF",
            "json_attributes_topic": self.attributes_topic(camera, rule),
            **common,
        }

    # -- connection -----------------------------------------------------------------------------

    def where(self) -> str:
        return f"{'mqtts' if self.cfg.use_tls else 'mqtt'}://{self.cfg.host}:{self.cfg.port}"

    def secrets(self) -> list[str]:
        return [self.cfg.password.get_secret_value()] if self.cfg.password else []

    def insecure_settings(self) -> list[str]:
        out = []
        if self.cfg.password is not None and not self.cfg.use_tls:
            out.append(
                "a password over plain TCP (mqtt://): whoever is on the path reads it; "
                "use mqtts:// or tls:"
            )
        if self.cfg.use_tls and self.cfg.tls is not None and self.cfg.tls.insecure:
            out.append("tls.insecure: true (the broker's host name is not checked)")
        return out

    def start(self) -> None:
        if self._client is not None:
            return
        self.warn_if_insecure()
        import paho.mqtt.client as mqtt  # noqa: PLC0415 (see the imports)
        from paho.mqtt.enums import CallbackAPIVersion  # noqa: PLC0415

        cfg = self.cfg
        cid = cfg.client_id or f"vigil-notify-{socket.gethostname()}-{os.getpid()}-{self.id}"
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=cid[:128],
            clean_session=True,
            protocol=mqtt.MQTTv311,
        )
        if cfg.username is not None:
            c.username_pw_set(
                cfg.username, cfg.password.get_secret_value() if cfg.password else None
            )
        if cfg.use_tls:
            tls = cfg.tls
            c.tls_set(
                ca_certs=tls.ca_file if tls else None,
                certfile=tls.cert_file if tls else None,
                keyfile=tls.key_file if tls else None,
            )
            if tls is not None and tls.insecure:
                c.tls_insecure_set(True)
        if self.announce:
            c.will_set(self.available_topic, "offline", qos=1, retain=True)
        c.reconnect_delay_set(min_delay=1, max_delay=30)
        c.max_inflight_messages_set(100)
        c.connect_timeout = cfg.timeout_s
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        self._client = c
        c.connect_async(cfg.host, cfg.port, keepalive=cfg.keepalive_s)
        c.loop_start()
        if self.announce and self.ctx.store is not None and self._avail_thread is None:
            self._avail_thread = threading.Thread(
                target=self._availability_loop, name=f"notify-{self.id}-availability", daemon=True
            )
            self._avail_thread.start()

    def close(self) -> None:
        self._closing.set()
        c, self._client = self._client, None
        if c is None:
            return
        if self._connected.is_set() and self.announce:
            # a clean stop: say so instead of leaving it to the will
            with contextlib.suppress(RuntimeError, ValueError):
                c.publish(self.available_topic, "offline", qos=1, retain=True).wait_for_publish(
                    min(2.0, self.cfg.timeout_s)
                )
        c.disconnect()
        c.loop_stop()
        if self._avail_thread is not None:
            self._avail_thread.join(timeout=5)
            self._avail_thread = None

    def wait_connected(self, timeout_s: float) -> bool:
        return self._connected.wait(timeout_s)

    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        try:  # paho's network thread ends on an exception in a callback: never let one out
            self._connected_now(client, reason_code)
        except Exception:
            log.exception("%s: error after connecting", self.describe())
            self._connected.set()

    def _connected_now(self, client: mqtt.Client, reason_code: Any) -> None:
        if reason_code.is_failure:
            self._last_error = f"connection refused: {reason_code}"
            self._state.down(self._last_error, failed_operation=False)
            return
        sock = client.socket()
        if sock is not None:  # small messages, each waited for: no Nagle delay (~40 ms each)
            with contextlib.suppress(OSError, AttributeError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._state.up()
        log.info("%s: connected", self.describe())
        if not self.announce:
            self._connected.set()
            return
        # retained state lives on the broker; after a broker restart without persistence it is
        # gone, so say it all again (all of it idempotent)
        client.publish(self.available_topic, "online", qos=1, retain=True)
        with self._lock:
            pairs = sorted(self._announced)
            cameras = sorted(self._cameras)
            states = {p: ("ON" if ids else "OFF") for p, ids in self._open.items()}
            avail = dict(self._availability)
            snaps = dict(self._snapshots)
        if self.cfg.discovery:
            for camera in cameras:
                self._publish_json(client, *self.discovery(camera, None))
            for camera, rule in pairs:
                self._publish_json(client, *self.discovery(camera, rule))
        for camera, state in avail.items():
            client.publish(self.camera_availability_topic(camera), state, qos=1, retain=True)
        for camera, jpeg in snaps.items():
            client.publish(self.snapshot_topic(camera), jpeg, qos=1, retain=True)
        for (camera, rule), state in states.items():
            client.publish(self.state_topic(camera, rule), state, qos=1, retain=True)
        self._connected.set()

    def _on_disconnect(self, _client, _userdata, _flags, reason_code, _properties) -> None:
        self._connected.clear()
        if self._closing.is_set():
            return
        self._last_error = f"disconnected: {reason_code}"
        self._state.down(self._last_error, failed_operation=False)

    def _publish_json(self, client: mqtt.Client, topic: str, payload: dict[str, Any]) -> Any:
        return client.publish(topic, dumps_text(payload), qos=1, retain=True)

    # -- delivery -------------------------------------------------------------------------------

    def _ready(self) -> mqtt.Client:
        if self._client is None:
            self.start()
        if not self._connected.wait(self.cfg.timeout_s) or self._client is None:
            raise SinkError(f"not connected to {self.where()} ({self._last_error})")
        return self._client

    def _wait(self, infos: list[Any], t0: float) -> None:
        import paho.mqtt.client as mqtt  # noqa: PLC0415 (see the imports)
        from paho.mqtt.enums import MQTTErrorCode  # noqa: PLC0415

        for info in infos:
            if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
                raise SinkError(f"publish failed: {mqtt.error_string(info.rc)}")
            left = self.cfg.timeout_s - (time.monotonic() - t0)
            try:
                info.wait_for_publish(max(0.0, left))
            except (RuntimeError, ValueError) as e:
                raise SinkError(f"publish failed: {e}") from None
            if not info.is_published():
                raise SinkError(
                    f"broker did not acknowledge within timeout_s {self.cfg.timeout_s:g} s"
                )

    def send(self, d: Delivery) -> str:
        client = self._ready()
        t0 = time.monotonic()
        alert = d.alert
        camera, rule, status = alert["camera_id"], alert["rule_id"], alert["status"]
        qos = self.cfg.qos
        infos: list[Any] = []
        pub = client.publish
        if status in ("started", "ended"):
            with self._lock:
                new_camera = camera not in self._cameras
                new_pair = (camera, rule) not in self._announced
                self._cameras.add(camera)
                self._announced.add((camera, rule))
            if self.cfg.discovery:
                if new_camera:
                    infos.append(self._publish_json(client, *self.discovery(camera, None)))
                if new_pair:
                    infos.append(self._publish_json(client, *self.discovery(camera, rule)))
            if new_camera and self.ctx.store is not None:
                self._poll_availability(only=camera)
            if status == "started":
                jpeg = self.ctx.snapshot(alert["id"])
                if jpeg:
                    with self._lock:
                        self._snapshots[camera] = jpeg
                    infos.append(pub(self.snapshot_topic(camera), jpeg, qos=qos, retain=True))
            with self._lock:
                ids = self._open.setdefault((camera, rule), set())
                if status == "started":
                    ids.add(alert["id"])
                else:
                    ids.discard(alert["id"])
                state = "ON" if ids else "OFF"
            infos.append(
                pub(
                    self.attributes_topic(camera, rule),
                    d.raw or dumps_text(alert),
                    qos=qos,
                    retain=True,
                )
            )
            infos.append(pub(self.state_topic(camera, rule), state, qos=qos, retain=True))
        links = self.ctx.links(alert)
        event = dumps_text({**alert, **links}) if links else d.raw or dumps_text(alert)
        infos.append(pub(f"{self.prefix}alerts", event, qos=qos))
        self._wait(infos, t0)
        return f"{len(infos)} message(s) acknowledged"

    def test(self, alert: dict[str, Any]) -> str:
        """Only the event on ``<prefix>alerts`` (no retained state, no discovery: a test alert
        must not leave a fake camera in Home Assistant)."""
        client = self._ready()
        t0 = time.monotonic()
        info = client.publish(f"{self.prefix}alerts", dumps_text(alert), qos=self.cfg.qos)
        self._wait([info], t0)
        ms = (time.monotonic() - t0) * 1000
        return (
            f"published to {self.prefix}alerts on {self.where()} (QoS {self.cfg.qos}), "
            f"acknowledged in {ms:.0f} ms"
        )

    # -- camera availability --------------------------------------------------------------------

    def _availability_loop(self) -> None:
        while True:
            self._poll_availability()
            if self._closing.wait(self.cfg.availability_interval_s):
                return

    def _poll_availability(self, only: str | None = None) -> None:
        """``online`` for each camera whose ingest status says ``streaming``; published when it
        changes (and for every camera at the first look)."""
        store = self.ctx.store
        client = self._client
        if store is None or client is None:
            return
        try:
            if only is not None:
                states = {only: store.client.hget(store.keys.camera_status(only), "state")}
            else:
                states = self._camera_states(store)
        except redis.RedisError as e:
            self.ctx._redis_state.down(f"{type(e).__name__}; camera availability not updated")
            return
        self.ctx._redis_state.up()
        with self._lock:
            cameras = set(self._cameras) | ({only} if only else set())
            self._cameras |= set(states)
            cameras |= set(states)
            changes = {}
            for camera in cameras if only is None else {only}:
                raw = states.get(camera)
                state = "online" if raw in (b"streaming", "streaming") else "offline"
                if self._availability.get(camera) != state:
                    self._availability[camera] = state
                    changes[camera] = state
        for camera, state in changes.items():
            client.publish(self.camera_availability_topic(camera), state, qos=1, retain=True)

    def _camera_states(self, store: Any) -> dict[str, Any]:
        head = store.keys.camera_status("")
        keys = list(store.client.scan_iter(match=f"{_glob_escape(head)}*", count=500))
        pipe = store.client.pipeline(transaction=False)
        for k in keys:
            pipe.hget(k, "state")
        values = pipe.execute() if keys else []
        out = {}
        for k, v in zip(keys, values, strict=True):
            name = k.decode() if isinstance(k, bytes) else k
            out[name[len(head) :]] = v
        return out


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)
