"""An ingest worker process that writes down every detection message Kafka acknowledged.

Test helper of test_kafka_cluster.py: the worker is SIGKILLed mid-run, so what it had been told
was durable must be on the topic. One line per acknowledged message, ``camera epoch seq``,
flushed at once (what a killed process wrote is what it knew).

    python -m tests.e2e.ledger_worker CONFIG WORKER_ID LEDGER
"""

from __future__ import annotations

import logging
import sys
import threading

from pipeline.app import build_worker
from pipeline.common.lifecycle import install_signal_handlers
from pipeline.config import load_config


class LedgerProducer:
    """Wraps the worker's producer: a successful send appends to the ledger."""

    def __init__(self, producer, ledger) -> None:
        self._producer = producer
        self._ledger = ledger
        self._lock = threading.Lock()

    def send(self, topic, key=None, value=None, timestamp_ms=None):
        fut = self._producer.send(topic, key=key, value=value, timestamp_ms=timestamp_ms)
        line = f"{key} {value['epoch']} {value['seq']}\n"

        def acked(_meta) -> None:
            with self._lock:
                self._ledger.write(line)
                self._ledger.flush()

        fut.add_callback(acked)
        return fut

    def __getattr__(self, name):
        return getattr(self._producer, name)


def main() -> int:
    config, worker_id, ledger_path = sys.argv[1:4]
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    cfg = load_config(config)
    stop = threading.Event()
    install_signal_handlers(stop)
    with open(ledger_path, "a", buffering=1) as ledger:
        worker = build_worker(cfg, worker_id=worker_id).start()
        worker.producer = LedgerProducer(worker.producer, ledger)
        try:
            worker.run(stop)
        finally:
            worker.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
