"""SIGKILL the notifier (a real ``vigil notify serve`` process) in the middle of deliveries,
twice, and restart it: every (id, status) reaches the receiver at least once, every repeat
carries the same Idempotency-Key and the same signed body, and a repeat comes only from what the
notifier could not have committed at the kill (docs/notify.md, "Delivery"): an event delivered
within the last ``commit_interval_s``, or one behind an event of its partition that was not
delivered yet (the commit waits for the oldest unsettled event of a partition). The repeats are
counted and reported (``-s`` shows the line; the count is also a junit property)."""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from tests.support.kafka import read_topic
from tests.support.notify import (
    REPO,
    Receiver,
    alert,
    cfg_from,
    committed,
    config_dict,
    end_offsets,
    produce,
    signature_ok,
    webhook,
)
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

N_ALERTS = 200  # x (started, ended) = 400 events over 6 cameras
KILLS = (150, 320)  # requests received when the first and the second notifier are killed
COMMIT_INTERVAL_S = 0.25
POLL_TIMEOUT_MS = 100  # the loop commits after each poll: it waits at most this for records
# on top of the configured waits: the commit's round trip to Kafka and what a thread on a loaded
# 2-core machine loses to scheduling
SLACK_S = 0.5


def start(path, log):
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "notify", "serve", "-c", str(path)],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def process_of(reqs, kill_times) -> dict[int, int]:
    """Which notifier process (0, 1, 2) sent each request (by ``id``): a keep-alive connection
    never outlives its process, and its first request came after that process started."""
    first: dict[tuple[str, int], float] = {}
    for r in sorted(reqs, key=lambda r: r.t):
        first.setdefault(r.peer, r.t)
    return {id(r): sum(k < first[r.peer] for k in kill_times) for r in reqs}


def test_sigkill_mid_delivery_loses_nothing(kafka_bootstrap, tmp_path, record_property):
    events = []
    for n in range(N_ALERTS):
        cam = f"cam-{n % 6}"
        events += [alert(n, camera=cam), alert(n, "ended", camera=cam)]
    want = {f"{e['id']}:{e['status']}" for e in events}
    with Receiver(delay_s=0.02) as rx:
        sink = webhook(rx.url, concurrency=2)
        data = config_dict(
            kafka_bootstrap,
            [sink],
            commit_interval_s=COMMIT_INTERVAL_S,
            poll_timeout_ms=POLL_TIMEOUT_MS,
        )
        path = tmp_path / "vigil.yaml"
        path.write_text(yaml.safe_dump(data))
        cfg = cfg_from(data)
        produce(cfg, events)
        log_path = tmp_path / "notify.log"
        kill_times = []
        with log_path.open("ab") as log:
            for kill_at in KILLS:
                proc = start(path, log)
                try:
                    assert wait_for(lambda n=kill_at: len(rx.requests) >= n, 90, step=0.01), (
                        log_path.read_text()[-3000:]
                    )
                finally:
                    kill_times.append(time.monotonic())
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(10)
            proc = start(path, log)
            try:
                got = wait_for(lambda: want <= set(rx.keys()), 120, step=0.1)
                assert got, (len(want - set(rx.keys())), log_path.read_text()[-3000:])
                ends = end_offsets(cfg)
                assert wait_for(lambda: committed(cfg) == ends, 30), "offsets not committed"
            finally:
                proc.send_signal(signal.SIGTERM)
                assert proc.wait(30) == 0, log_path.read_text()[-3000:]
        reqs = rx.snapshot()
    by_key = collections.defaultdict(list)
    for r in reqs:
        by_key[r.headers["idempotency-key"]].append(r)
    assert set(by_key) == want  # every (id, status), nothing else
    for key, copies in by_key.items():
        body = copies[0].json
        assert key == f"{body['id']}:{body['status']}"
        # a repeat is the same event: same key, byte-identical body, each copy signed with the
        # time it was sent
        assert len({c.body for c in copies}) == 1
        assert all(signature_ok(c) for c in copies)

    # where each event is on Kafka: (partition, offset)
    where = {}
    for rec in read_topic(cfg, cfg.kafka.topics.alerts, len(events)):
        a = json.loads(rec.value)
        where[f"{a['id']}:{a['status']}"] = (rec.partition, rec.offset)
    assert set(where) == want
    at = {pos: key for key, pos in where.items()}
    proc_of = process_of(reqs, kill_times)
    # what each killed notifier could not have committed: per partition, everything from the
    # first event (from where it started reading) that was not answered by the kill minus
    # commit_interval_s and the loop's poll; only that may come again
    window = COMMIT_INTERVAL_S + POLL_TIMEOUT_MS / 1000 + SLACK_S
    first_late = []  # per killed process: partition -> first offset it may not have committed
    for n, killed in enumerate(kill_times):
        sent = {r.headers["idempotency-key"]: r for r in reqs if proc_of[id(r)] == n}
        early = {k for k, r in sent.items() if r.done is not None and r.done <= killed - window}
        late = {}
        for part in {where[k][0] for k in sent}:
            offset = min(where[k][1] for k in sent if where[k][0] == part)
            while at.get((part, offset)) in early:
                offset += 1
            late[part] = offset
        first_late.append(late)
    ages = []
    for key, copies in by_key.items():
        procs = [proc_of[id(c)] for c in copies]
        assert procs == sorted(set(procs)), f"{key} delivered twice by one notifier: {procs}"
        part, offset = where[key]
        for c in copies[:-1]:  # each copy but the last was followed by a kill, then a repeat
            n = proc_of[id(c)]
            age = kill_times[n] - c.t
            ages.append(age)
            assert offset >= first_late[n][part], (
                f"{key} (partition {part}, offset {offset}) was answered {age:.2f} s before "
                f"kill {n + 1}, and so was every event of its partition before it (the first "
                f"that was not: offset {first_late[n][part]}): it was committed by then "
                f"(commit_interval_s {COMMIT_INTERVAL_S}), yet it was delivered again"
            )
    duplicates = len(reqs) - len(want)
    repeated = sum(1 for c in by_key.values() if len(c) > 1)
    record_property("notify_duplicates", duplicates)
    print(
        f"\nnotify crash test: {len(want)} events, {len(reqs)} requests, {duplicates} duplicates "
        f"({repeated} events repeated) after 2 SIGKILLs at {list(KILLS)} requests; a repeated "
        f"copy was answered at most {max(ages, default=0):.2f} s before its kill "
        f"(commit_interval_s {COMMIT_INTERVAL_S})"
    )
