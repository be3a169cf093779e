"""Retention: segments past their days go unless an alert's clip holds them; over the disk budget
or under the free-space floor the oldest go first (held ones last); nothing outside
recordings.dir is ever deleted, whatever the index or a symlink says; a dry run deletes nothing;
one log line per pass.

Segments here are files laid out as segments holding filler bytes (tests/support/recordings.py
``fake_segment``): retention goes by names, sizes and the index, never by the media inside."""

from __future__ import annotations

import logging
import os
import uuid
from collections import namedtuple
from pathlib import Path

import pytest
import redis
import yaml
from prometheus_client import REGISTRY
from redis.backoff import NoBackoff
from redis.retry import Retry

import pipeline.record.camera_settings as camera_settings_mod
import pipeline.record.retention as retention_mod
from pipeline.cameras.settings import RecordConfig, RetainConfig
from pipeline.cameras.spec import CameraSpec
from pipeline.common.redis import RedisKeys
from pipeline.record.camera_settings import CameraSettings
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import relative_path, start_ms
from pipeline.record.retention import GB, Retention, RetentionLoop
from tests.support.cli import run_vigil
from tests.support.config import REDIS_URL
from tests.support.recordings import fake_segment
from tests.support.redis import cleanup
from tests.support.waiting import wait_for

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z
DAY = 86400.0
Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def store():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e}): run `make infra-up`")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    keys = RedisKeys(prefix)
    yield SegmentIndex(client, keys), HoldStore(client, keys), prefix
    cleanup(client, prefix)


def _retention(root, store, days=None, **kw) -> Retention:
    index, holds, _ = store
    days = days or {}
    return Retention(
        root,
        index,
        holds,
        lambda cam: RetainConfig(continuous_days=days.get(cam, 7), event_days=30),
        **kw,
    )


def _on_disk(root: Path) -> list[Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*.mp4"))


def _indexed(index: SegmentIndex, camera: str) -> list[float]:
    return [s.start for s in index.segments(camera, 0, 2**33)]


def _lines(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "pipeline.record.retention" and r.levelno >= logging.INFO
    ]


def _deleted_total(reason: str) -> float:
    return REGISTRY.get_sample_value("vigil_recordings_deleted_total", {"reason": reason}) or 0.0


def test_segments_past_their_days_go_file_and_index_entry_together(tmp_path, store, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    index = store[0]
    old = [fake_segment(tmp_path, index, "cam1", NOW - d * DAY) for d in (10, 8)]
    young = [fake_segment(tmp_path, index, "cam1", NOW - d * DAY) for d in (6, 1)]
    other = fake_segment(tmp_path, index, "cam2", NOW - 10 * DAY)  # cam2 keeps 30 days
    before = _deleted_total("days")
    report = _retention(tmp_path, store, days={"cam2": 30}).run_once(NOW)
    assert [d.segment.rel for d in report.deleted] == [s.path for s in old]
    assert {d.reason for d in report.deleted} == {"days"}
    assert _on_disk(tmp_path) == sorted([other.path, *(s.path for s in young)])
    assert _indexed(index, "cam1") == [s.start for s in young]
    assert _indexed(index, "cam2") == [other.start]
    assert _deleted_total("days") - before == 2
    (line,) = _lines(caplog)
    assert "deleted 2 segments" in line and "past retain.continuous_days" in line, line
    # emptied date folders of old hours are removed, not left behind
    assert not (tmp_path / old[0].path.parent).exists()


def test_a_held_segment_outlives_continuous_days_until_the_hold_ends(tmp_path, store, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    index, holds, _ = store
    segs = [fake_segment(tmp_path, index, "cam1", NOW - 10 * DAY + i * 10) for i in range(3)]
    # an alert inside the middle segment, kept until 20 days after it (event_days)
    alert_at = segs[1].start + 4
    holds.hold("cam1", "a1", alert_at - 1, alert_at + 2, until=alert_at + 20 * DAY)
    ret = _retention(tmp_path, store)
    report = ret.run_once(NOW)
    assert [d.segment.rel for d in report.deleted] == [segs[0].path, segs[2].path]
    assert _on_disk(tmp_path) == [segs[1].path]
    assert report.kept_by_holds == 1
    assert "1 segments past their days kept for alerts' clips" in _lines(caplog)[-1]
    # still held a day before the hold ends; gone the pass after it ended
    assert ret.run_once(alert_at + 19 * DAY).deleted == []
    assert _on_disk(tmp_path) == [segs[1].path]
    report = ret.run_once(alert_at + 20 * DAY + 1)
    assert [d.segment.rel for d in report.deleted] == [segs[1].path]
    assert _on_disk(tmp_path) == []
    assert holds.active("cam1", alert_at + 20 * DAY + 1) == []


def test_over_the_disk_budget_the_oldest_go_first_held_ones_last(tmp_path, store):
    index, holds, _ = store
    segs = [
        fake_segment(tmp_path, index, cam, NOW - 3600 + i * 10)
        for i, cam in enumerate(["cam1", "cam2"] * 3)
    ]  # 6 segments of 1000 bytes, cameras interleaved, all young
    holds.hold("cam1", "a1", segs[0].start + 1, segs[0].start + 2, until=NOW + DAY)
    before = _deleted_total("disk_budget")
    ret = _retention(tmp_path, store, max_disk_gb=3500 / GB)
    report = ret.run_once(NOW)
    # 6000 bytes over a 3500 budget: three go, the oldest not held (segs[0] is held)
    assert [d.segment.rel for d in report.deleted] == [s.path for s in segs[1:4]]
    assert {d.reason for d in report.deleted} == {"disk_budget"}
    assert report.bytes_after <= 3500
    assert _on_disk(tmp_path) == sorted(s.path for s in (segs[0], segs[4], segs[5]))
    assert _deleted_total("disk_budget") - before == 3
    assert ret.run_once(NOW).deleted == []  # the budget holds: nothing more goes
    # a smaller budget: the newer unheld ones go before the older held one
    report = _retention(tmp_path, store, max_disk_gb=1500 / GB).run_once(NOW)
    assert [d.segment.rel for d in report.deleted] == [segs[4].path, segs[5].path]
    assert _on_disk(tmp_path) == [segs[0].path]
    # held segments alone over the budget: the budget wins, the held one goes too
    report = _retention(tmp_path, store, max_disk_gb=500 / GB).run_once(NOW)
    assert [d.segment.rel for d in report.deleted] == [segs[0].path]
    assert report.deleted[0].segment.held
    assert _on_disk(tmp_path) == []


def test_below_the_free_space_floor_the_oldest_go_until_it_is_met(tmp_path, store):
    index = store[0]
    segs = [fake_segment(tmp_path, index, "cam1", NOW - 3600 + i * 10) for i in range(5)]
    free = {"bytes": 500}
    seen = []

    def usage(path: str) -> Usage:
        seen.append(path)
        return Usage(10**12, 10**12 - free["bytes"], free["bytes"])

    ret = _retention(tmp_path, store, min_free_gb=2500 / GB, disk_usage=usage)
    report = ret.run_once(NOW)
    # 500 free, 2500 wanted: two segments of 1000 free enough
    assert [d.segment.rel for d in report.deleted] == [s.path for s in segs[:2]]
    assert {d.reason for d in report.deleted} == {"free_space"}
    assert seen[0] == str(tmp_path)
    assert _on_disk(tmp_path) == [s.path for s in segs[2:]]
    free["bytes"] = 2600
    assert ret.run_once(NOW).deleted == []


def test_a_forged_index_entry_or_a_symlink_deletes_nothing_outside(tmp_path, store):
    index, _, prefix = store
    root, outside = tmp_path / "rec", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    victim = outside / "victim.mp4"
    victim.write_bytes(b"keep me")
    old = NOW - 30 * DAY
    # 1. a real old segment whose index entry names a path outside
    seg = fake_segment(root, index, "cam1", old)
    index.client.hset(f"{prefix}recording:cam1:{start_ms(old)}", "path", "../outside/victim.mp4")
    # 2. an hour folder that is a symlink to a folder outside, holding a segment-named file
    t2 = old + 7200
    hour = root / relative_path("cam1", t2).parent
    hour.parent.mkdir(parents=True, exist_ok=True)
    (outside / "hour").mkdir()
    decoy = outside / "hour" / relative_path("cam1", t2).name
    decoy.write_bytes(b"keep me too")
    hour.symlink_to(outside / "hour", target_is_directory=True)
    index.add(type(seg)("cam1", relative_path("cam1", t2), t2, t2 + 10, 11, 1))
    # 3. a segment-named symlink to a file outside
    t3 = old + 20
    link = root / relative_path("cam1", t3)
    link.symlink_to(victim)
    # 4. a camera folder that is a symlink to a folder outside
    (outside / "cam2" / "x").mkdir(parents=True)
    cam2_file = fake_segment(outside, index, "cam2", old).path
    (root / "cam2").symlink_to(outside / "cam2", target_is_directory=True)
    report = _retention(root, store, max_disk_gb=1 / GB).run_once(NOW)
    assert [d.segment.rel for d in report.deleted] == [seg.path]
    assert not (root / seg.path).exists()
    assert victim.read_bytes() == b"keep me"
    assert decoy.read_bytes() == b"keep me too"
    assert link.is_symlink() and (outside / cam2_file).exists()


def test_a_dry_run_deletes_nothing_and_says_what_would_go(tmp_path, store, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    index = store[0]
    segs = [fake_segment(tmp_path, index, "cam1", NOW - d * DAY) for d in (9, 8, 1)]
    report = _retention(tmp_path, store).run_once(NOW, dry_run=True)
    assert [d.segment.rel for d in report.deleted] == [s.path for s in segs[:2]]
    assert _on_disk(tmp_path) == [s.path for s in segs]
    assert _indexed(index, "cam1") == [s.start for s in segs]
    (line,) = _lines(caplog)
    assert line.startswith("retention: would delete 2 segments"), line


def test_deleting_everything_goes_oldest_first_with_one_line_per_pass(
    tmp_path, store, caplog, monkeypatch
):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    index = store[0]
    cams = ["cam2", "cam1", "cam3", "cam1", "cam2"]
    segs = [fake_segment(tmp_path, index, c, NOW - 3 * DAY + i * 60) for i, c in enumerate(cams)]
    order = []
    real = retention_mod.unlink_segment
    monkeypatch.setattr(
        retention_mod,
        "unlink_segment",
        lambda root, rel, **kw: (order.append(rel), real(root, rel, **kw)),
    )
    # a retention change to one day: everything is past it
    ret = _retention(tmp_path, store, days={c: 1 for c in cams})
    report = ret.run_once(NOW)
    assert order == [s.path for s in segs]  # applied oldest first, across cameras
    assert _on_disk(tmp_path) == []
    assert len(_lines(caplog)) == 1
    assert "deleted 5 segments (0.0 MB), oldest first" in _lines(caplog)[0]
    assert report.bytes_after == 0
    fake_segment(tmp_path, index, "cam1", NOW - 2 * DAY)
    ret.run_once(NOW)
    ret.run_once(NOW)  # nothing to do: no line
    assert len(_lines(caplog)) == 2


def test_the_loop_outlives_a_failing_pass_and_runs_at_its_interval(tmp_path, store, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    index, holds, prefix = store
    dead = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    broken = Retention(
        tmp_path, SegmentIndex(dead, RedisKeys(prefix)), holds, lambda c: RetainConfig()
    )
    fake_segment(tmp_path, index, "cam1", NOW - 30 * DAY)
    loop = RetentionLoop(broken, interval_s=0.05, clock=lambda: NOW)
    assert loop.run_once() is None and loop.run_once() is None  # Redis away: no crash
    assert _on_disk(tmp_path) != []
    loop.retention = _retention(tmp_path, store)
    loop.start()
    try:
        assert wait_for(lambda: loop.passes >= 2, timeout=10)
    finally:
        loop.stop()
    assert _on_disk(tmp_path) == []
    lines = _lines(caplog)
    assert sum("retention pass failed" in m for m in lines) == 1, lines
    assert sum("work again" in m for m in lines) == 1, lines


def test_prune_cli_prints_what_went_and_why(tmp_path, store, capsys, monkeypatch):
    index, _, prefix = store
    root = tmp_path / "rec"
    segs = [fake_segment(root, index, "cam1", NOW - 3600 + i * 10) for i in range(3)]
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": REDIS_URL, "key_prefix": prefix},
                "recordings": {"dir": str(root), "max_disk_gb": 1500 / GB, "min_free_gb": 0},
            }
        )
    )
    code, out, err = run_vigil(
        ["recordings", "prune", "-c", str(cfg), "--dry-run"], capsys, monkeypatch
    )
    assert code == 0, err
    assert out.splitlines()[0].startswith(f"would delete {segs[0].path} ")
    assert out.splitlines()[0].endswith(": disk_budget")
    assert "retention: would delete 2 segments" in out
    assert _on_disk(root) == [s.path for s in segs]
    code, out, err = run_vigil(["recordings", "prune", "-c", str(cfg)], capsys, monkeypatch)
    assert code == 0, err
    assert [ln.split()[1] for ln in out.splitlines()[:2]] == [str(s.path) for s in segs[:2]]
    assert "retention: deleted 2 segments" in out
    assert _on_disk(root) == [segs[2].path]
    assert os.path.isdir(root)


def test_each_guard_alone_refuses_symlinks_and_paths_outside(tmp_path):
    """Two guards, each enough: the scan never lists a symlink, and the unlink refuses one."""
    root, outside = tmp_path / "rec", tmp_path / "outside"
    (outside / "hour").mkdir(parents=True)
    t = NOW - 30 * DAY
    rel = relative_path("cam1", t)
    decoy = outside / "hour" / rel.name
    decoy.write_bytes(b"keep")
    (root / rel.parent.parent).mkdir(parents=True)
    (root / rel.parent).symlink_to(outside / "hour", target_is_directory=True)
    rel2 = relative_path("cam1", t + 7200)
    (root / rel2.parent).mkdir(parents=True)
    (root / rel2).symlink_to(decoy)
    assert list(retention_mod.segment_files(root)) == []
    for bad in (rel, rel2, Path("cam1", "..", "..", "outside", "hour", rel.name)):
        with pytest.raises(retention_mod.RefusedPath):
            retention_mod.unlink_segment(root, bad)
    assert decoy.read_bytes() == b"keep" and (root / rel2).is_symlink()


def test_a_forged_end_in_the_index_keeps_nothing_past_its_days(tmp_path, store):
    index, _, prefix = store
    old = [fake_segment(tmp_path, index, "cam1", NOW - 20 * DAY + i * 10) for i in range(4)]
    young = fake_segment(tmp_path, index, "cam1", NOW - DAY)
    for seg, end in zip(old, ["1e12", "nan", "yesterday", "inf"], strict=True):
        index.client.hset(f"{prefix}recording:cam1:{start_ms(seg.start)}", "end", end)
    report = _retention(tmp_path, store).run_once(NOW)
    assert [d.segment.rel for d in report.deleted] == [s.path for s in old]
    assert _on_disk(tmp_path) == [young.path]


def test_registry_retain_follows_each_cameras_definition_and_outlives_a_bad_read(caplog):
    """Each camera's record.retain from the registry, read once per max_age_s; a camera not in
    it gets the defaults; a registry that cannot be read keeps the last answer, logged once."""
    specs = {
        "door": CameraSpec(
            id="door",
            url="rtsp://127.0.0.1:8554/door",
            record=RecordConfig(enabled=True, retain=RetainConfig(continuous_days=2)),
        )
    }
    reads, now = [], [0.0]

    def read():
        reads.append(now[0])
        if len(reads) in (2, 3):
            raise ConnectionError("Kafka away")
        return dict(specs)

    retain = CameraSettings(read, max_age_s=60, clock=lambda: now[0])
    assert retain("door").continuous_days == 2
    assert retain("gone") == RetainConfig()  # not in the registry: the defaults
    assert reads == [0.0]  # one read for both cameras
    with caplog.at_level(logging.WARNING, logger=camera_settings_mod.log.name):
        for t in (60.0, 120.0):
            now[0] = t
            assert retain("door").continuous_days == 2  # the last answer, not the defaults
    assert len(reads) == 3
    lines = [r.getMessage() for r in caplog.records]
    assert sum("camera registry unreadable" in m for m in lines) == 1, lines
    specs["door"] = specs["door"].model_copy(
        update={"record": RecordConfig(enabled=True, retain=RetainConfig(continuous_days=9))}
    )
    now[0] = 180.0
    assert retain("door").continuous_days == 9


def test_a_camera_recorded_in_mode_events_keeps_its_segments_event_days(tmp_path, store):
    """All of an events camera's segments are events': retain.event_days, not continuous_days."""
    index, holds, _ = store
    record = RecordConfig(
        enabled=True, mode="events", retain=RetainConfig(continuous_days=2, event_days=9)
    )
    specs = {"door": CameraSpec(id="door", url="rtsp://127.0.0.1:8554/door", record=record)}
    old, kept = (fake_segment(tmp_path, index, "door", NOW - d * DAY) for d in (10, 8))
    report = Retention(tmp_path, index, holds, CameraSettings(lambda: specs)).run_once(NOW)
    assert [d.segment.rel for d in report.deleted] == [old.path]
    assert _on_disk(tmp_path) == [kept.path]
