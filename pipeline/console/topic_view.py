"""A live in-memory view of a compacted Kafka topic (the camera registry, the live rules).

Reading a compacted topic from the beginning for every page load would cost a consumer start and
a full read per request; the console keeps one follower per table instead
(:class:`~pipeline.common.compacted_table.TableFollower`: every partition, no group, the table's
own parsing and handling of unusable records) and serves reads from its values. Writes go to
Kafka; :meth:`TopicView.wait` lets a request that wrote wait until the view has read its own
write (read-your-writes).
"""

from __future__ import annotations

from typing import TypeVar

from pipeline.common.compacted_table import CompactedTable, TableFollower
from pipeline.common.kafka import KafkaConfig, KafkaUnavailable

T = TypeVar("T")


class TopicView(TableFollower[T]):
    """``items``: key -> the latest valid value of ``table`` (tombstones remove it; an unusable
    record is skipped and counted under ``console_<name>``, the last valid value stays)."""

    def __init__(self, cfg: KafkaConfig, table: CompactedTable[T], name: str) -> None:
        super().__init__(
            table,
            cfg,
            name=f"console-{name}",
            reader=f"console_{name}",
            client_suffix=f"console-{name}",
            retry_max_s=5.0,
        )

    def require_connected(self) -> None:
        """Raise KafkaUnavailable at once when Kafka is away, instead of a write that hangs."""
        if not self.connected():
            raise KafkaUnavailable(
                f"Kafka at {self.cfg.bootstrap_servers} is unreachable"
                + (f" ({self.error})" if self.error else "")
                + "; nothing was changed"
            )
