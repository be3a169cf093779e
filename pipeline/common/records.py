"""Skipping a Kafka record no reader can use: counted, logged without flooding, never fatal.

Every reader of a Vigil topic (the camera registry, the live rules, the console's topic views,
alert subscribers) hands a record it cannot use to :meth:`SkippedRecords.skip` and goes on with
the next one: a record written to hurt a reader (``[`` x 100,000, 10 MB, invalid UTF-8) costs one
skipped record, never the reader. The alert service and the notifier dead-letter instead (their
topics' consumers need the record itself); they decode with the same
:func:`pipeline.common.jsoncodec.decode_record`.
"""

from __future__ import annotations

import logging
import threading
import time

from prometheus_client import Counter

from pipeline.common.jsoncodec import RecordRejected

SKIPPED = Counter(
    "vigil_records_skipped_total",
    "Kafka records a reader skipped as unusable, by reader and reason (null, too_large, "
    "too_deep, not_utf8, not_json, invalid, no_key, error)",
    ["reader", "reason"],
)

# A flood of bad records must not flood the log: at most LOG_BURST lines per reader and interval
# (each record an operator may have to fix, e.g. a broken rule), then one summary line.
LOG_BURST = 10
SUMMARY_INTERVAL_S = 60.0


def reason_of(error: BaseException) -> str:
    """The metric label of ``error``: the decoder's reason, else ``invalid`` (a ``ValueError``:
    JSON that does not describe the thing) or ``error`` (anything else a parser raised)."""
    if isinstance(error, RecordRejected):
        return error.reason
    return "invalid" if isinstance(error, ValueError) else "error"


class SkippedRecords:
    """Counts and logs the records one reader skipped (thread-safe)."""

    def __init__(self, logger: logging.Logger, reader: str) -> None:
        self.log = logger
        self.reader = reader
        self.total = 0
        self._lock = threading.Lock()
        self._window_at = time.monotonic()
        self._logged = 0  # lines in the current interval
        self._unlogged = 0  # records skipped without a line since the last summary

    def skip(self, where: str, reason: str, detail: str) -> None:
        """Count one skipped record; ``where`` says which (topic[partition]@offset or key),
        ``detail`` why, in one line (never the record's value: it may hold a secret)."""
        SKIPPED.labels(self.reader, reason).inc()
        with self._lock:
            self.total += 1
            now = time.monotonic()
            if now - self._window_at >= SUMMARY_INTERVAL_S:
                self._window_at, self._logged = now, 0
            quiet = self._logged >= LOG_BURST
            if quiet:
                self._unlogged += 1
                if self._unlogged > 1:
                    return
            else:
                self._logged += 1
                unlogged, self._unlogged = self._unlogged, 0
        if quiet:  # the first record past the burst: say that the next ones are only counted
            self.log.error(
                "%s: more unusable records; counted in vigil_records_skipped_total, without a "
                "log line for up to %g s",
                self.reader,
                SUMMARY_INTERVAL_S,
            )
            return
        if unlogged:
            self.log.error(
                "%s: %d unusable record(s) were skipped without a line of their own",
                self.reader,
                unlogged,
            )
        detail = " ".join(detail.split())[:300]
        self.log.error("%s: record %s skipped (%s): %s", self.reader, where, reason, detail)
