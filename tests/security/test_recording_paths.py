"""A Redis write must never make Vigil read or serve a file outside ``recordings.dir`` (issue 24):
the segment index is Redis data, and an entry whose ``path`` names a file elsewhere (an absolute
path, ``../``) is the attack. The file of a segment is derived from its camera and start only,
so the forged entry reads the camera's own segment, or nothing."""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from pathlib import Path

import pytest
import redis

from pipeline.common.errors import InputError
from pipeline.common.redis import RedisKeys
from pipeline.record.clips import cached_range
from pipeline.record.export import NothingRecorded, export
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import relative_path, segment_path, start_ms
from pipeline.record.segmenter import Segment
from tests.support.config import REDIS_URL
from tests.support.recordings import ffprobe_size, make_mp4
from tests.support.redis import cleanup

pytestmark = pytest.mark.integration

T = 1_800_000_000.0  # a segment's start (2027-01-15)


@pytest.fixture
def index():
    client = redis.Redis.from_url(REDIS_URL)
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    try:
        yield SegmentIndex(client, RedisKeys(prefix))
    finally:
        cleanup(client, prefix)


def forge(index: SegmentIndex, camera: str, start: float, path: str) -> None:
    """What an attacker with write access to Redis writes: an index entry naming ``path``."""
    ms = start_ms(start)
    index.client.hset(
        index.keys.recording(camera, ms),
        mapping={"start": repr(start), "end": repr(start + 2.0), "path": path, "bytes": 1000},
    )
    index.client.zadd(index.keys.recordings(camera), {str(ms): ms})


def test_a_forged_index_path_never_reads_a_file_outside_the_recordings(index, tmp_path):
    root = tmp_path / "recordings"
    secret = make_mp4(tmp_path / "outside" / "secret.mp4", 160, 120)  # outside recordings.dir
    make_mp4(segment_path(root, "cam1", T), 320, 240)  # the camera's own segment
    # an entry for the real segment, its path pointing away (absolute)
    forge(index, "cam1", T, str(secret))
    # entries for times with no segment on disk, pointing out of the dir (absolute, ../)
    forge(index, "cam1", T + 100, str(secret))
    forge(index, "cam1", T + 200, "../outside/secret.mp4")
    forge(index, "cam1", T + 300, "cam1/../../outside/secret.mp4")

    out = tmp_path / "real.mp4"
    export(index, root, "cam1", T, T + 2, out)
    assert ffprobe_size(out) == (320, 240), "the export read the file the index named"

    for at in (T + 100, T + 200, T + 300):
        out = tmp_path / f"forged-{int(at)}.mp4"
        with pytest.raises(NothingRecorded):
            export(index, root, "cam1", at, at + 2, out)
        assert not out.exists()
    assert Path(secret).is_file()  # untouched


def test_a_fifo_in_place_of_a_segment_is_not_read(index, tmp_path):
    """Only a regular file is read: opening a FIFO would block the reader forever."""
    root = tmp_path / "recordings"
    fifo = segment_path(root, "cam1", T)
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)
    forge(index, "cam1", T, str(fifo.relative_to(root)))
    raised: list[BaseException] = []

    def run() -> None:
        try:
            export(index, root, "cam1", T, T + 2, tmp_path / "x.mp4")
        except BaseException as e:  # noqa: BLE001 - handed to the test
            raised.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(30)
    if t.is_alive():  # unblock the reader: a writer opens the FIFO and closes it
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        t.join(10)
        pytest.fail("the export blocked opening a FIFO")
    assert len(raised) == 1 and isinstance(raised[0], NothingRecorded), raised


def test_index_entries_that_are_not_numbers_in_order_are_skipped(index, tmp_path):
    """Forged or damaged entries neither crash a reader nor place a segment anywhere else: each
    is skipped, the good one beside them is read."""
    good = Segment("cam1", Path("ignored"), T, T + 2.0, 1000, 20)
    index.add(good)
    forged = {
        T + 10: {"start": "nan", "end": repr(T + 12)},
        T + 20: {"start": repr(T + 20), "end": "inf"},
        T + 30: {"start": repr(T + 30), "end": repr(T + 29)},  # ends before it starts
        T + 40: {"start": repr(T + 55), "end": repr(T + 57)},  # not its member's start
        T + 50: {"start": "soon", "end": repr(T + 52)},
    }
    for at, fields in forged.items():
        ms = start_ms(at)
        index.client.hset(index.keys.recording("cam1", ms), mapping={**fields, "bytes": 1})
        index.client.zadd(index.keys.recordings("cam1"), {str(ms): ms})
    # members that are not starts: text, and one past the year 9999
    index.client.zadd(index.keys.recordings("cam1"), {"../x": T * 1000 + 5, "9" * 16: T * 1000 + 6})
    assert index.segments("cam1", T - 10, T + 100) == [
        Segment("cam1", relative_path("cam1", T), T, T + 2.0, 1000, 20)
    ]


@pytest.mark.parametrize("where", ["file", "camera folder"])
def test_a_link_planted_in_the_recordings_is_not_followed(index, tmp_path, where):
    """Files on disk are hostile too: a symbolic link in place of a segment, or of the folder
    above it, pointing at an MP4 outside ``recordings.dir``, is never read."""
    root = tmp_path / "recordings"
    secret = make_mp4(tmp_path / "outside" / "secret.mp4", 160, 120)
    seg = segment_path(root, "cam1", T)
    if where == "file":
        seg.parent.mkdir(parents=True)
        seg.symlink_to(secret)
    else:  # the camera's folder is a link to a folder laid out like recordings
        elsewhere = tmp_path / "elsewhere"
        planted = segment_path(elsewhere, "cam1", T)
        make_mp4(planted, 160, 120)
        root.mkdir()
        (root / "cam1").symlink_to(elsewhere / "cam1", target_is_directory=True)
    forge(index, "cam1", T, relative_path("cam1", T).as_posix())
    with pytest.raises(NothingRecorded):
        export(index, root, "cam1", T, T + 2, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()


def test_a_link_planted_in_the_clip_cache_is_not_served(index, tmp_path):
    """A link named like a cached cut (or a linked cache folder) is never what the console
    serves: the cut is made again from the camera's own segment."""
    root = tmp_path / "recordings"
    secret = make_mp4(tmp_path / "outside" / "secret.mp4", 160, 120)
    make_mp4(segment_path(root, "cam1", T), 320, 240)
    forge(index, "cam1", T, relative_path("cam1", T).as_posix())
    first = cached_range(index, root, "cam1", T, T + 2)
    first.path.unlink()
    first.path.symlink_to(secret)  # same name: the cache would take it for the cut
    again = cached_range(index, root, "cam1", T, T + 2)
    assert not again.path.is_symlink() and ffprobe_size(again.path) == (320, 240)
    cache = root / ".clips"
    shutil.rmtree(cache)
    (tmp_path / "elsewhere").mkdir()
    cache.symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    with pytest.raises(InputError, match="symbolic link"):
        cached_range(index, root, "cam1", T, T + 2)
    assert list((tmp_path / "elsewhere").iterdir()) == []  # nothing written through it
