"""The Redis data model of alerts (docs/redis.md): streams, one hash per alert, snapshots and the
alert service's checkpoints.

Every key starts with ``redis.key_prefix`` (default ``vigil:``):

    {p}alerts                       stream, every alert event, capped at redis.stream_maxlen
    {p}alerts:<camera>              stream, that camera's alert events, capped at camera_stream_maxlen
    {p}alert:<id>                   hash, the alert's fields (latest status) + bookkeeping
    {p}snapshot:<id>                JPEG of the triggering frame with the box drawn, TTL snapshot_ttl_s
    {p}source:<id>                  JPEG of the triggering frame as the camera saw it (the console's
                                    review adds it to the retraining dataset), TTL snapshot_ttl_s
    {p}state:<group>:<topic>:<part> alert service checkpoint: consumed offset + rule engine state
    {p}frame:<camera>:<epoch>:<seq> (written by the ingest worker) recent frames, short TTL

Writing an alert event is one Lua script, so it is atomic and idempotent: the hash field
``written_<status>`` marks an (id, status) as stored, and a replay of the same event (after a crash
or a rebalance) changes nothing, so each (id, status) is in each stream exactly once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import redis

from pipeline.common.jsoncodec import dumps_text
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client

log = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1

# KEYS: 1 alert hash, 2 global stream, 3 camera stream, 4 snapshot key, 5 source frame key
# ARGV: 1 status, 2 capture_ts of the triggering frame, 3 global maxlen, 4 camera maxlen,
#       5 snapshot ttl (s), 6 snapshot JPEG ('' = none), 7 alert hash ttl (s, 0 = none),
#       8 alert message JSON, 9 id, 10 camera, 11 rule, 12 severity,
#       13 source frame JPEG ('' = none), 14 frame detections JSON ('' = none),
#       15.. hash field/value pairs
# The snapshot, the source frame and frame_detections are written with a new "started" only.
# Returns {written (1 = new, 0 = already there), published (1 = Kafka already has it)}.
_WRITE_LUA = """
local status = ARGV[1]
local written = 'written_' .. status
if redis.call('HEXISTS', KEYS[1], written) == 1 then
  return {0, redis.call('HEXISTS', KEYS[1], 'published_' .. status)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local latency = string.format('%.1f', (now - tonumber(ARGV[2])) * 1000)
local fields = {}
for i = 15, #ARGV do fields[#fields + 1] = ARGV[i] end
fields[#fields + 1] = written
fields[#fields + 1] = string.format('%.6f', now)
if status == 'started' then
  fields[#fields + 1] = 'latency_ms'
  fields[#fields + 1] = latency
  fields[#fields + 1] = 'snapshot'
  if ARGV[6] ~= '' then
    redis.call('SET', KEYS[4], ARGV[6], 'EX', ARGV[5])
    fields[#fields + 1] = '1'
  else
    fields[#fields + 1] = '0'
  end
  if ARGV[13] ~= '' then
    redis.call('SET', KEYS[5], ARGV[13], 'EX', ARGV[5])
  end
  if ARGV[14] ~= '' then
    fields[#fields + 1] = 'frame_detections'
    fields[#fields + 1] = ARGV[14]
  end
  redis.call('HSET', KEYS[1], unpack(fields))
else
  fields[#fields + 1] = 'ended_latency_ms'
  fields[#fields + 1] = latency
  redis.call('HSET', KEYS[1], unpack(fields))
  redis.call('HSETNX', KEYS[1], 'snapshot', '0')
end
if tonumber(ARGV[7]) > 0 then
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
local entry = {'id', ARGV[9], 'status', status, 'camera_id', ARGV[10], 'rule_id', ARGV[11],
               'severity', ARGV[12], 'alert', ARGV[8]}
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', unpack(entry))
return {1, 0}
"""

# Field types of the alert hash (alert.v1 fields plus the store's own).
_INT_FIELDS = {"schema_version", "frame_seq", "epoch", "track_id", "count"}
_FLOAT_FIELDS = {
    "started_at",
    "ended_at",
    "updated_at",
    "confidence",
    "latency_ms",
    "ended_latency_ms",
    "written_started",
    "written_ended",
    "reviewed_at",
}
_JSON_FIELDS = {"box", "zone", "details", "frame_detections"}
_BOOL_FIELDS = {"snapshot", "published_started", "published_ended"}


def _enc(value: Any) -> str:
    t = type(value)
    if t is str:  # the common cases first, by exact type (a bool is not an int here)
        return value
    if value is None:
        return ""
    if t is int or t is float:
        return str(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float | str):
        return str(value)
    return dumps_text(value)


def _dec(field: str, raw: str) -> Any:
    if field in _BOOL_FIELDS:
        return raw == "1"
    if raw == "":
        return None
    try:
        if field in _INT_FIELDS:
            return int(raw)
        if field in _FLOAT_FIELDS:
            return float(raw)
        if field in _JSON_FIELDS:
            return json.loads(raw)
    except ValueError:
        return raw
    return raw


@dataclass(slots=True)
class AlertWrite:
    """One alert event to store: its ``vigil.alerts/v1`` message, the capture time of the frame
    that produced it (for ``latency_ms``) and, for started events only, the snapshot JPEG, the
    frame as the camera saw it (``source``) and all the frame's detections (``frame_detections``:
    a list of ``{label, confidence, box, track_id}``, or that list as JSON) for the console's
    review."""

    message: dict[str, Any]
    capture_ts: float
    snapshot: bytes | None = None
    # ``message`` as compact JSON when the caller already has it (the alert service publishes
    # the same bytes on Kafka); encoded here when None.
    payload: bytes | None = None
    source: bytes | None = None
    frame_detections: list[dict[str, Any]] | str | bytes | None = None


class AlertStore:
    def __init__(
        self,
        cfg: RedisConfig,
        client: redis.Redis | None = None,
        alert_ttl_s: int | None = None,
    ) -> None:
        self.cfg = cfg
        self.prefix = cfg.key_prefix
        self.keys = RedisKeys(cfg.key_prefix)
        self.client = client if client is not None else redis_client(cfg)
        self.alert_ttl_s = alert_ttl_s or 0
        self._write = self.client.register_script(_WRITE_LUA)

    # -- keys -------------------------------------------------------------------------------------

    # key names: pipeline.common.redis.RedisKeys (docs/redis.md)
    def stream_key(self, camera_id: str | None = None) -> str:
        return self.keys.alerts_stream(camera_id)

    def alert_key(self, alert_id: str) -> str:
        return self.keys.alert(alert_id)

    def snapshot_key(self, alert_id: str) -> str:
        return self.keys.snapshot(alert_id)

    def source_key(self, alert_id: str) -> str:
        return self.keys.source_frame(alert_id)

    def checkpoint_key(self, group: str, topic: str, partition: int) -> str:
        return self.keys.checkpoint(group, topic, partition)

    def frame_key(self, camera_id: str, epoch: int, seq: int) -> str:
        return self.keys.frame(camera_id, epoch, seq)

    # -- writing ------------------------------------------------------------------------------------

    def snapshot_sources(
        self, items: Sequence[tuple[str, str, int, int]]
    ) -> list[tuple[bytes | None, bool]]:
        """For each ``(alert_id, camera, epoch, seq)`` of a started alert: the frame's JPEG (None
        when it expired) and whether the started event is already stored (then no snapshot needs
        drawing). One round trip."""
        if not items:
            return []
        pipe = self.client.pipeline(transaction=False)
        for alert_id, camera, epoch, seq in items:
            pipe.hexists(self.alert_key(alert_id), "written_started")
            pipe.get(self.frame_key(camera, epoch, seq))
        res = pipe.execute()
        return [(res[2 * i + 1], bool(res[2 * i])) for i in range(len(items))]

    def write_alerts(self, items: Sequence[AlertWrite]) -> list[tuple[bool, bool]]:
        """Store alert events, in order, in one round trip. Returns per item ``(written,
        published)``: written is False when that (id, status) was already stored (nothing
        changed), published is True when it was also already marked as sent to Kafka."""
        if not items:
            return []
        pipe = self.client.pipeline(transaction=False)
        for it in items:
            self._write(
                keys=self._write_keys(it.message),
                args=self._write_args(it),
                client=pipe,
            )
        return [(bool(w), bool(p)) for w, p in pipe.execute()]

    def write_alert(self, item: AlertWrite) -> tuple[bool, bool]:
        return self.write_alerts([item])[0]

    def _write_keys(self, msg: dict[str, Any]) -> list[str]:
        aid = msg["id"]
        return [
            self.alert_key(aid),
            self.stream_key(),
            self.stream_key(msg["camera_id"]),
            self.snapshot_key(aid),
            self.source_key(aid),
        ]

    def _write_args(self, it: AlertWrite) -> list[Any]:
        msg = it.message
        payload = it.payload
        if payload is None:
            payload = dumps_text(msg).encode()
        dets = it.frame_detections
        if dets is not None and not isinstance(dets, str | bytes):
            dets = dumps_text(dets)
        args: list[Any] = [
            msg["status"],
            repr(float(it.capture_ts)),
            self.cfg.stream_maxlen,
            self.cfg.camera_stream_maxlen,
            self.cfg.snapshot_ttl_s,
            it.snapshot or b"",
            self.alert_ttl_s,
            payload,
            msg["id"],
            msg["camera_id"],
            msg["rule_id"],
            msg["severity"],
            it.source or b"",
            dets if dets is not None else b"",
        ]
        append = args.append
        for k, v in msg.items():
            append(k)
            append(_enc(v))
        return args

    def mark_published(self, events: Iterable[tuple[str, str]]) -> None:
        """Record that Kafka acknowledged these ``(id, status)``: a replay does not send them
        again (only a crash between the acknowledgement and this call can duplicate one)."""
        pipe = self.client.pipeline(transaction=False)
        n = 0
        for alert_id, status in events:
            pipe.hset(self.alert_key(alert_id), f"published_{status}", "1")
            n += 1
        if n:
            pipe.execute()

    def put_snapshot(self, alert_id: str, jpeg: bytes, ttl_s: int | None = None) -> None:
        self.client.set(self.snapshot_key(alert_id), jpeg, ex=ttl_s or self.cfg.snapshot_ttl_s)

    # -- reading ------------------------------------------------------------------------------------

    def get_alert(self, alert_id: str) -> dict[str, Any] | None:
        """The alert's hash decoded (alert.v1 fields of its latest status, plus ``snapshot``,
        ``latency_ms``, ``written_<status>``, ``frame_detections`` (a list), the review fields
        ``review``, ``review_note``, ``reviewed_by``, ``reviewed_at`` (a float),
        ``review_image``, ...); None when unknown."""
        raw = self.client.hgetall(self.alert_key(alert_id))
        if not raw:
            return None
        return {k.decode(): _dec(k.decode(), v.decode()) for k, v in raw.items()}

    def get_snapshot(self, alert_id: str) -> bytes | None:
        return self.client.get(self.snapshot_key(alert_id))

    def get_source(self, alert_id: str) -> bytes | None:
        """The started alert's frame as the camera saw it (no drawing); None when none was kept
        or it expired."""
        return self.client.get(self.source_key(alert_id))

    def recent(self, camera_id: str | None = None, count: int = 20) -> list[dict[str, Any]]:
        """The latest ``count`` alert events (newest first) from the global or a camera stream."""
        entries = self.client.xrevrange(self.stream_key(camera_id), "+", "-", count=count)
        return [parse_entry(fields) for _, fields in entries]

    def stream_len(self, camera_id: str | None = None) -> int:
        return int(self.client.xlen(self.stream_key(camera_id)))

    # -- checkpoints --------------------------------------------------------------------------------

    def get_checkpoints(
        self, group: str, partitions: Sequence[tuple[str, int]]
    ) -> list[dict[str, Any] | None]:
        if not partitions:
            return []
        pipe = self.client.pipeline(transaction=False)
        for topic, part in partitions:
            pipe.get(self.checkpoint_key(group, topic, part))
        out: list[dict[str, Any] | None] = []
        for (topic, part), raw in zip(partitions, pipe.execute(), strict=True):
            if raw is None:
                out.append(None)
                continue
            try:
                cp = json.loads(raw)
                if cp.get("version") != CHECKPOINT_VERSION or not isinstance(cp.get("offset"), int):
                    raise ValueError(f"unsupported checkpoint version {cp.get('version')!r}")
                out.append(cp)
            except ValueError as e:
                log.warning("checkpoint of %s[%d] ignored: %s", topic, part, e)
                out.append(None)
        return out

    def get_checkpoint(self, group: str, topic: str, partition: int) -> dict[str, Any] | None:
        return self.get_checkpoints(group, [(topic, partition)])[0]

    def put_checkpoints(
        self, group: str, checkpoints: dict[tuple[str, int], tuple[int, dict[str, Any] | str]]
    ) -> None:
        """``{(topic, partition): (next offset, engine snapshot)}``; each key is one SET, so a
        checkpoint's offset and state always belong together. The snapshot is a dict, or the
        same already encoded as JSON (``RuleEngine.snapshot_json``)."""
        if not checkpoints:
            return
        pipe = self.client.pipeline(transaction=False)
        for (topic, part), (offset, engine) in checkpoints.items():
            if isinstance(engine, str):
                # what json.dumps gives for the dict below, without decoding the engine's JSON
                text = (
                    f'{{"version":{CHECKPOINT_VERSION},"offset":{int(offset)},"engine":{engine}}}'
                )
            else:
                value = {"version": CHECKPOINT_VERSION, "offset": int(offset), "engine": engine}
                text = json.dumps(value, separators=(",", ":"))
            pipe.set(self.checkpoint_key(group, topic, part), text)
        pipe.execute()

    def put_checkpoint(
        self, group: str, topic: str, partition: int, offset: int, engine: dict
    ) -> None:
        self.put_checkpoints(group, {(topic, partition): (offset, engine)})


def parse_entry(fields: dict[Any, Any]) -> dict[str, Any]:
    """The alert message of a stream entry (field ``alert``, JSON)."""
    raw = fields.get(b"alert", fields.get("alert"))
    if isinstance(raw, bytes):
        raw = raw.decode()
    return json.loads(raw)
