"""Dead letters: detection messages the alert service cannot process (bad JSON, a message that
does not match ``detection.v1``, a rule that raised) are parked on the dead-letter topic with the
reason, where they came from and (the start of) the message itself (docs/messages.md)."""

from __future__ import annotations

import logging
import time
from typing import Any

from alerts import metrics as m

log = logging.getLogger(__name__)


def dead_letter(rec: Any, error: str, *, group: str, max_value_bytes: int) -> dict[str, Any]:
    """The dead-letter message for Kafka record ``rec`` that failed with ``error`` (counted and
    logged here)."""
    limit = max_value_bytes
    raw = rec.value or b""
    value = {
        "error": error[:2000],
        "topic": rec.topic,
        "partition": rec.partition,
        "offset": rec.offset,
        "key": rec.key.decode("utf-8", "replace") if rec.key is not None else None,
        "value": None if rec.value is None else raw[:limit].decode("utf-8", "replace"),
        "value_truncated": len(raw) > limit,
        "ts": round(time.time(), 6),
        "group": group,
    }
    m.MESSAGES.labels("dlq").inc()
    m.DLQ.inc()
    log.warning("dead letter %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, error[:200])
    return value
