"""Holds: the stretches of a camera's recordings that an alert's clip needs, kept past the
continuous retention until ``retain.event_days`` after the alert.

Written by whoever learns of an alert's range (the recorder following ``vigil.alerts``), read by
retention before it deletes a segment. A hold is data in Redis, so it is read as hostile: ranges
and times must be finite numbers in order, anything else is ignored (and so protects nothing
it should not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import redis

from pipeline.common.contracts import validate_camera_id
from pipeline.common.redis import RedisConfig, RedisKeys, redis_client


@dataclass(frozen=True)
class Hold:
    alert_id: str
    start: float  # epoch s, capture_ts clock
    end: float
    until: float  # kept until then
    # the alert is still running (its ``started`` message): ``end`` is only where it has got to
    # so far; a recorder in ``mode: events`` keeps recording until the ``ended`` message's hold
    open: bool = False

    def covers(self, t0: float, t1: float) -> bool:
        """Whether ``[t0, t1]`` (a segment) overlaps the held range."""
        return t0 < self.end and t1 > self.start


def _number(v: bytes | str | None) -> float | None:
    try:
        x = float(v.decode() if isinstance(v, bytes) else v)  # type: ignore[arg-type]
    except (TypeError, ValueError, UnicodeDecodeError):
        return None
    return x if math.isfinite(x) else None


class HoldStore:
    """Put, list and expire holds through one Redis client."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self.client = client
        self.keys = keys

    @classmethod
    def from_config(cls, cfg: RedisConfig) -> HoldStore:
        return cls(redis_client(cfg), RedisKeys(cfg.key_prefix))

    def hold(
        self,
        camera_id: str,
        alert_id: str,
        start: float,
        end: float,
        until: float,
        *,
        open: bool = False,  # noqa: A002 - the hold's field
    ) -> None:
        """Keep ``[start, end]`` of the camera's recordings until ``until``; a later hold of the
        same alert (its end moved on) replaces the earlier one. ``open``: the alert is still
        running (:attr:`Hold.open`)."""
        validate_camera_id(camera_id)
        if not all(math.isfinite(x) for x in (start, end, until)) or not start <= end:
            raise ValueError(f"hold of {alert_id!r}: a range in order and finite times")
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(
            self.keys.recording_hold(camera_id, alert_id),
            mapping={
                "from": repr(start),
                "to": repr(end),
                "until": repr(until),
                "open": "1" if open else "0",
            },
        )
        pipe.zadd(self.keys.recording_holds(camera_id), {alert_id: until})
        pipe.execute()

    def active(self, camera_id: str, now: float) -> list[Hold]:
        """The camera's holds still in force at ``now``, oldest range first (unusable ones
        skipped)."""
        key = self.keys.recording_holds(camera_id)
        ids = [
            m.decode() if isinstance(m, bytes) else m
            for m in self.client.zrangebyscore(key, f"({now}", "+inf")
        ]
        pipe = self.client.pipeline(transaction=False)
        for alert_id in ids:
            pipe.hmget(self.keys.recording_hold(camera_id, alert_id), "from", "to", "until", "open")
        out = []
        for alert_id, (a, b, u, o) in zip(ids, pipe.execute(), strict=True):
            start, end, until = _number(a), _number(b), _number(u)
            if start is None or end is None or until is None or start > end or until <= now:
                continue
            out.append(Hold(alert_id, start, end, until, open=o in (b"1", "1")))
        return sorted(out, key=lambda h: h.start)

    def expire(self, camera_id: str, now: float) -> int:
        """Forget the camera's holds that ended before ``now``; returns how many."""
        key = self.keys.recording_holds(camera_id)
        ids = [
            m.decode() if isinstance(m, bytes) else m
            for m in self.client.zrangebyscore(key, "-inf", now)
        ]
        if ids:
            pipe = self.client.pipeline(transaction=False)
            for alert_id in ids:
                pipe.unlink(self.keys.recording_hold(camera_id, alert_id))
            pipe.zrem(key, *ids)
            pipe.execute()
        return len(ids)
