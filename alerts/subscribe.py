"""Subscribe to alerts from Python: ``for alert in alerts.subscribe(cfg, camera="lobby"): ...``

Two backends, same ``vigil.alerts/v1`` dicts (``alerts/schemas/alert.v1.json``):

- ``kafka`` (default): reads the ``vigil.alerts`` topic without a consumer group (every
  subscriber sees every alert), and the recorder's ``clip`` messages from ``vigil.clips`` (an
  alert's clip is recorded: docs/recordings.md; a record there with another status is skipped,
  never taken for an alert; ``clips=False`` leaves that topic out), and the console's
  ``reviewed`` messages from ``vigil.reviews`` (likewise: only ``reviewed`` is taken from it;
  ``reviews=False`` leaves it out; a ``reviewed`` still on the alerts topic is shown too). Kafka delivery is
  at-least-once, so repeats of an (id, status) are dropped here (``dedup=True``, remembering
  the last 100 000); ``reviewed`` messages (an operator's verdict, docs/console.md) by (id,
  status, review.at), since an alert may be reviewed again.
- ``redis``: reads the Redis stream ``{prefix}alerts`` (or ``{prefix}alerts:<camera>``), which
  holds each (id, status) exactly once but only the latest ``redis.stream_maxlen`` entries;
  no ``clip`` messages (the recorder writes the clip fields into the alert's hash instead).

``from_beginning`` starts from the oldest alert kept; otherwise only alerts that arrive after the
subscription started (the start position is fixed before the first ``next()`` returns or blocks,
and ``on_ready`` is called then). ``timeout_s`` ends the iteration after that many seconds without
a matching alert; None waits forever.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any, Literal

import redis
from kafka import TopicPartition

from alerts.store import AlertStore, parse_entry
from pipeline.common.contracts import Connections
from pipeline.common.errors import UserError
from pipeline.common.jsoncodec import decode_record
from pipeline.common.kafka import make_consumer
from pipeline.common.records import SkippedRecords, reason_of

log = logging.getLogger(__name__)

DEDUP_WINDOW = 100_000


class SubscribeError(UserError, RuntimeError):
    """The alert source cannot be read (missing topic, unreachable service)."""


def subscribe(
    cfg: Connections,
    camera: str | None = None,
    rule: str | None = None,
    from_beginning: bool = False,
    backend: Literal["kafka", "redis"] = "kafka",
    timeout_s: float | None = None,
    dedup: bool = True,
    on_ready: Callable[[], None] | None = None,
    clips: bool = True,
    reviews: bool = True,
) -> Iterator[dict[str, Any]]:
    """Iterate over alert messages as they arrive, optionally only one camera's / rule's."""
    if backend == "kafka":
        source = _kafka_alerts(cfg, from_beginning, on_ready, clips, reviews)
    elif backend == "redis":
        source = _redis_alerts(cfg, camera, from_beginning, on_ready)
    else:
        raise ValueError(f"unknown backend {backend!r} (kafka or redis)")
    return _filtered(source, camera, rule, timeout_s, dedup and backend == "kafka")


def _filtered(
    source: Iterator[dict[str, Any] | None],
    camera: str | None,
    rule: str | None,
    timeout_s: float | None,
    dedup: bool,
) -> Iterator[dict[str, Any]]:
    """``source`` yields alerts, or None when it waited without result (so timeouts apply)."""
    seen: OrderedDict[tuple[str, ...], None] = OrderedDict()
    last = time.monotonic()
    try:
        for alert in source:
            if alert is not None:
                if (camera is not None and alert.get("camera_id") != camera) or (
                    rule is not None and alert.get("rule_id") != rule
                ):
                    alert = None
                elif dedup:
                    key = dedup_key(alert)
                    if key in seen:
                        alert = None
                    else:
                        seen[key] = None
                        if len(seen) > DEDUP_WINDOW:
                            seen.popitem(last=False)
            if alert is not None:
                last = time.monotonic()
                yield alert
            elif timeout_s is not None and time.monotonic() - last >= timeout_s:
                return
    finally:
        close = getattr(source, "close", None)
        if close is not None:
            close()


def dedup_key(alert: dict[str, Any]) -> tuple[str, ...]:
    """What makes an alert message unique: (id, status); (id, status, review.at) for a
    ``reviewed`` message, so a second review of the same alert is not taken for a repeat."""
    status = str(alert.get("status"))
    if status == "reviewed":
        review = alert.get("review")
        at = review.get("at") if isinstance(review, dict) else None
        return (str(alert.get("id")), status, repr(at))
    return (str(alert.get("id")), status)


def _kafka_alerts(
    cfg: Connections,
    from_beginning: bool,
    on_ready: Callable[[], None] | None,
    clips: bool,
    reviews: bool = True,
) -> Iterator[dict[str, Any] | None]:
    topic = cfg.kafka.topics.alerts
    # the extra topics and the one status each may carry
    extra = {}
    if clips:
        extra[cfg.kafka.topics.clips] = "clip"
    if reviews:
        extra[cfg.kafka.topics.reviews] = "reviewed"
    # records a subscriber cannot use are skipped (counted in vigil_records_skipped_total)
    skipped = SkippedRecords(log, "alerts_subscriber")
    consumer = make_consumer(
        cfg.kafka,
        "alerts-subscriber",
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        allow_auto_create_topics=False,
    )
    try:
        parts = None
        extra_parts: dict[str, Any] = {}
        deadline = time.monotonic() + cfg.kafka.bootstrap_timeout_ms / 1000
        while True:
            parts = consumer.partitions_for_topic(topic)
            extra_parts = {t: consumer.partitions_for_topic(t) for t in extra}
            done = parts and all(extra_parts.values())
            if done or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        if not parts:
            raise SubscribeError(
                f"topic {topic} does not exist at {cfg.kafka.bootstrap_servers} "
                "(the alert service creates it when it starts)"
            )
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        for t, status in extra.items():
            if extra_parts.get(t):
                tps += [TopicPartition(t, p) for p in sorted(extra_parts[t])]
            else:
                log.warning("topic %s does not exist (yet): alerts without %s messages", t, status)
        consumer.assign(tps)
        if from_beginning:
            consumer.seek_to_beginning(*tps)
        else:
            consumer.seek_to_end(*tps)
        for tp in tps:  # resolve now, so an alert sent after on_ready is never skipped
            consumer.position(tp, timeout_ms=cfg.kafka.request_timeout_ms)
        if on_ready is not None:
            on_ready()
        while True:
            batch = consumer.poll(timeout_ms=500)
            got = False
            for recs in batch.values():
                for rec in recs:
                    where = f"{rec.topic}[{rec.partition}]@{rec.offset}"
                    try:
                        alert = decode_record(rec.value)
                    except ValueError as e:  # too large or deep, not UTF-8, not JSON, no value
                        skipped.skip(where, reason_of(e), str(e))
                        continue
                    if not isinstance(alert, dict):
                        skipped.skip(
                            where,
                            "invalid",
                            f"an alert is a JSON object, not {type(alert).__name__}",
                        )
                    elif rec.topic in extra and alert.get("status") != extra[rec.topic]:
                        # the recorders' topic announces clips, the console's carries reviews:
                        # neither starts or ends an alert
                        skipped.skip(
                            where, "invalid", f"not a {extra[rec.topic]} message on {rec.topic}"
                        )
                    else:
                        got = True
                        yield alert
            if not got:
                yield None
    finally:
        consumer.close(autocommit=False)


def _redis_alerts(
    cfg: Connections,
    camera: str | None,
    from_beginning: bool,
    on_ready: Callable[[], None] | None,
) -> Iterator[dict[str, Any] | None]:
    store = AlertStore(cfg.redis)
    key = store.stream_key(camera)
    client = store.client
    delay, failing, ready = 0.2, False, False
    last_id: bytes | str | None = "0-0" if from_beginning else None
    try:
        while True:
            try:
                if last_id is None:  # start after the newest entry there is now
                    newest = client.xrevrange(key, "+", "-", count=1)
                    last_id = newest[0][0] if newest else "0-0"
                if not ready:
                    ready = True
                    if on_ready is not None:
                        on_ready()
                res = client.xread({key: last_id}, count=100, block=1000)
                if failing:
                    log.info("Redis is back")
                failing, delay = False, 0.2
            except redis.RedisError as e:
                if not failing:
                    log.warning("Redis unavailable (%s); retrying", type(e).__name__)
                failing = True
                yield None
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            got = False
            for _stream, entries in res or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    try:
                        alert = parse_entry(fields)
                    except (TypeError, ValueError):
                        continue
                    got = True
                    yield alert
            if not got:
                yield None
    finally:
        client.close()
