"""Retention of the clip cache ``recordings.dir/.clips`` (pipeline/record/clip_cache.py, run by a
retention pass): clips not asked for in ``clip_cache_days`` go, cached clips go before segments
when space is short, and nothing outside the real ``.clips`` folder is ever deleted."""

from __future__ import annotations

import logging
import os
import uuid

import pytest
import redis

from pipeline.cameras.settings import RetainConfig
from pipeline.common.redis import RedisKeys
from pipeline.record.holds import HoldStore
from pipeline.record.index import SegmentIndex
from pipeline.record.retention import GB, Retention
from tests.support.config import REDIS_URL
from tests.support.recordings import fake_segment
from tests.support.redis import cleanup

pytestmark = pytest.mark.integration

NOW = 1_800_000_000.0
DAY = 86400.0
AID = "0123456789abcdef0123"


@pytest.fixture
def stores():
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.RedisError as e:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({e}): run `make infra-up`")
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    yield SegmentIndex(client, RedisKeys(prefix)), HoldStore(client, RedisKeys(prefix))
    cleanup(client, prefix)


def _retention(root, stores, **kw) -> Retention:
    return Retention(root, *stores, lambda cam: RetainConfig(), clip_cache_days=1, **kw)


def _file(path, size: int, age_s: float):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def test_cached_clips_not_asked_for_in_clip_cache_days_go(tmp_path, stores, caplog):
    caplog.set_level(logging.INFO, logger="pipeline.record")
    cache = tmp_path / "rec" / ".clips"
    old = _file(cache / f"{AID}.aaaa.1796000000000000.mp4", 500, 2 * DAY)
    old_gaps = _file(cache / f"{AID}.aaaa.1796000000000000.gaps.json", 9, 2 * DAY)
    orphan_gaps = _file(cache / "h1.abcd.1796000000000000.gaps.json", 9, 10)  # its cut is gone
    young = _file(cache / "b1.bbbb.1796000000000000.mp4", 500, 3600)
    served = _file(
        cache / "g1.abab.1796000000000000.mp4", 500, 9 * DAY
    )  # cut long ago, served an hour ago
    os.utime(served, (NOW - 3600, NOW - 9 * DAY))
    stale_part = _file(cache / ".c1.cccc.part", 500, 2 * 3600)  # a cut that never finished
    cutting = _file(cache / ".d1.dddd.part", 500, 10)  # a cut in progress
    other = _file(cache / "notes.txt", 5, 9 * DAY)  # not a clip's name: never ours to delete
    outside = _file(tmp_path / "outside" / "e1.eeee.1796000000000000.mp4", 5, 9 * DAY)
    (cache / "f1.ffff.1796000000000000.mp4").symlink_to(
        outside
    )  # a clip-named symlink to a file elsewhere
    report = _retention(tmp_path / "rec", stores).run_once(NOW)
    assert (report.clips_deleted, report.clips_bytes) == (2, 1000)
    assert not old.exists() and not stale_part.exists()
    assert not old_gaps.exists() and not orphan_gaps.exists()  # a cut's gap list goes with it
    assert young.exists() and served.exists() and cutting.exists()
    assert other.exists() and outside.exists()
    assert (cache / "f1.ffff.1796000000000000.mp4").is_symlink()
    (line,) = [r.getMessage() for r in caplog.records if r.name.endswith("retention")]
    assert "2 cached clips deleted" in line, line


def test_cached_clips_go_before_segments_when_over_the_disk_budget(tmp_path, stores):
    index, _ = stores
    root = tmp_path / "rec"
    segs = [fake_segment(root, index, "cam1", NOW - 3600 + i * 10, size=4000) for i in range(3)]
    clips = [
        _file(root / ".clips" / f"a{i}.abcd.1796000000000000.mp4", 3000, 60 * (3 - i))
        for i in range(3)
    ]
    # 12000 segment bytes + 9000 cached: a budget of 15000 is met by the two oldest clips
    report = _retention(root, stores, max_disk_gb=15000 / GB).run_once(NOW)
    assert report.deleted == []  # no segment went
    assert [c.exists() for c in clips] == [False, False, True]  # oldest first
    assert all((root / s.path).exists() for s in segs)
    # a budget below the segments alone: every cached clip goes, then the oldest segment
    report = _retention(root, stores, max_disk_gb=9000 / GB).run_once(NOW)
    assert not clips[2].exists()
    assert [d.segment.rel for d in report.deleted] == [segs[0].path]


def test_a_symlinked_clip_cache_is_left_alone(tmp_path, stores):
    elsewhere = tmp_path / "elsewhere"
    victim = _file(elsewhere / f"{AID}.aaaa.1796000000000000.mp4", 500, 9 * DAY)
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / ".clips").symlink_to(elsewhere)
    report = _retention(tmp_path / "rec", stores, max_disk_gb=1 / GB).run_once(NOW)
    assert report.clips_deleted == 0 and victim.exists()


def test_a_pass_before_anything_was_recorded_is_no_error(tmp_path, stores):
    # the recorder service's first pass may come before its first camera made the folder
    report = _retention(tmp_path / "not-yet", stores, min_free_gb=1).run_once(NOW)
    assert report.deleted == [] and not report.failed
