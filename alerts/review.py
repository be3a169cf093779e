"""An operator's verdict on an alert: the ``reviewed`` message for ``vigil.reviews`` and the review
fields of the alert hash in Redis (docs/console.md).

The verdict is data about an alert, not a new alert: the message is the alert's latest message
with ``status: "reviewed"`` and ``review`` = ``{verdict, note, by, at}`` (alert.v1.json). An alert
may be reviewed more than once, so subscribers dedup reviewed messages by (id, status,
review.at) instead of (id, status).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from alerts.store import AlertStore

VERDICTS = ("true_positive", "false_positive")
REVIEW_FIELDS = ("review", "review_note", "reviewed_by", "reviewed_at", "review_image")

# The alert.v1 message's fields; the alert hash holds these plus the store's bookkeeping.
_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "alert.v1.json").read_text())
_MESSAGE_FIELDS: tuple[str, ...] = tuple(
    k for k in _SCHEMA["properties"] if k not in ("review", "clip")
)
_REQUIRED: tuple[str, ...] = tuple(_SCHEMA["required"])

# KEYS: 1 alert hash; ARGV: field/value pairs. Writes only into an alert that exists, so a review
# of an unknown (or expired) alert never leaves a hash without a TTL behind. Returns 1 if written.
_REVIEW_LUA = """
if redis.call('EXISTS', KEYS[1]) == 0 then
  return 0
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""


def _check(verdict: str, note: str, by: str, at: float) -> None:
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r}: one of {', '.join(VERDICTS)}")
    if not isinstance(note, str) or not isinstance(by, str) or not by:
        raise ValueError("note must be a string and by a non-empty user name")
    if isinstance(at, bool) or not isinstance(at, int | float) or not math.isfinite(at):
        raise ValueError(f"at must be a time in seconds, got {at!r}")


def review_message(alert: dict[str, Any], verdict: str, note: str, by: str, at: float) -> dict:
    """The ``reviewed`` alert.v1 message for ``alert`` (its message, or its decoded Redis hash:
    the store's own fields are left out). ``ValueError`` on a bad verdict or an ``alert`` that
    lacks a field of the message."""
    _check(verdict, note, by, at)
    missing = [k for k in _REQUIRED if k not in alert]
    if missing:
        raise ValueError(f"not an alert message: missing {', '.join(missing)}")
    msg = {k: alert[k] for k in _MESSAGE_FIELDS if k in alert}
    msg["status"] = "reviewed"
    msg["review"] = {"verdict": verdict, "note": note, "by": by, "at": float(at)}
    return msg


def store_review(
    store: AlertStore,
    alert_id: str,
    verdict: str,
    note: str,
    by: str,
    at: float,
    image: str | None,
) -> bool:
    """Write the verdict into the alert's hash (``review``, ``review_note``, ``reviewed_by``,
    ``reviewed_at``, ``review_image``: the dataset image it became, if any); a later review
    replaces it. False (nothing written) when the alert is not in Redis."""
    _check(verdict, note, by, at)
    fields = [
        "review",
        verdict,
        "review_note",
        note,
        "reviewed_by",
        by,
        "reviewed_at",
        repr(float(at)),
        "review_image",
        image or "",
    ]
    script = store.client.register_script(_REVIEW_LUA)
    return bool(script(keys=[store.alert_key(alert_id)], args=fields))
