"""``vigil dataset collect --recordings CAMERA --since 1h [--around-alerts]``: frames sampled from
the recorded segments (docs/retraining.md, "Collecting from recordings") with the live collector's
policies; FFmpeg's ``ffmpeg`` decodes the same segments as the independent judge of the pixels."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import cv2
import pytest
import redis
import yaml

from alerts.store import AlertStore
from pipeline.common.redis import RedisConfig, RedisKeys
from pipeline.record.index import SegmentIndex
from pipeline.record.layout import segment_path
from pipeline.record.segment import Segment
from tests.support.cli import run_vigil
from tests.support.recordings import (
    CLIP_FRAME_S,
    block_diff,
    copy_recording_as,
    ffmpeg_frames,
    make_mp4,
    store_alert,
)
from tests.support.redis import cleanup

# no detector (no 'uncertain' frames), no motion policy: the periodic policy and dedup alone; the
# periods are a little under whole analysis steps (2 per s) so float rounding never skips one
NO_DETECT = ["--no-detect", "--no-motion", "--min-interval", "0"]


def _records(out: Path) -> list[dict]:
    lines = (out / "manifest.jsonl").read_text().splitlines()
    recs = {}
    for line in lines:
        r = json.loads(line)
        recs[r["image"]] = {**recs.get(r["image"], {}), **r}
    return sorted((r for r in recs.values() if not r.get("removed")), key=lambda r: r["capture_ts"])


@pytest.fixture
def own(camera_recording, tmp_path):
    """The shared recording copied as a camera of this test's own (files, index, alerts under a
    Redis prefix of its own) and a config naming them."""
    rec = camera_recording
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    camera = f"ds{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(rec.redis_url)
    root = tmp_path / "recordings"
    index = SegmentIndex(client, RedisKeys(prefix))
    segments = copy_recording_as(rec, root, index, camera)
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": rec.redis_url, "key_prefix": prefix},
                "recordings": {"dir": str(root)},
            }
        )
    )
    try:
        yield str(cfg), camera, segments, root, prefix, index
    finally:
        cleanup(client, prefix)


@pytest.mark.integration
def test_frames_collected_from_recordings_are_the_recorded_frames_at_their_times(
    own, tmp_path, capsys, monkeypatch
):
    cfg, camera, segments, root, _, _ = own
    out = tmp_path / "dataset"
    argv = ["dataset", "collect", "-c", cfg, "--recordings", camera, "--since", "1h"]
    argv += ["-o", str(out), *NO_DETECT, "--periodic", "0.9", "--dedup", "0"]
    code, stdout, err = run_vigil(argv, capsys, monkeypatch)
    assert code == 0, err
    recs = _records(out)
    recorded = sum(s.duration for s in segments)
    # one frame a second of ~25 s, each analysed frame (2 per s) read from the 3 segments
    assert abs(len(recs) - recorded) <= 2, stdout
    assert f"{camera}: " in stdout and f"from {len(segments)} segment(s)" in stdout, stdout
    assert f"{len(recs)} kept (periodic {len(recs)})" in stdout, stdout
    assert all(r["source"] == "recordings" and r["reasons"] == ["periodic"] for r in recs)

    by_segment: dict[float, list[dict]] = {}
    for r in recs:
        by_segment.setdefault(r["recording"]["segment"], []).append(r)
    moving = 0
    for seg in segments:
        mine = by_segment.get(round(seg.start, 3), [])
        assert mine, f"no frame kept from the segment starting at {seg.start}"
        wanted = {round((r["capture_ts"] - seg.start) / CLIP_FRAME_S) for r in mine}
        near = {k + d for k in wanted for d in (-3, 3)}
        frames = ffmpeg_frames(segment_path(root, camera, seg.start), wanted | near)
        for r in mine:
            k = round((r["capture_ts"] - seg.start) / CLIP_FRAME_S)
            img = cv2.imread(str(out / r["image"]))
            assert block_diff(img, frames[k]) <= 6, f"{r['image']} is not frame {k} of its segment"
            others = [block_diff(img, frames[j]) for j in (k - 3, k + 3) if j in frames]
            moving += bool(others) and min(others) > 12
    assert moving >= len(recs) // 3, "the footage should move: else times are not checked"


@pytest.mark.integration
def test_around_alerts_takes_frames_only_inside_the_alerts_clip_ranges(
    own, camera_recording, tmp_path, capsys, monkeypatch
):
    cfg, camera, segments, _, prefix, _ = own
    s0 = segments[0].start
    store = AlertStore(RedisConfig(url=camera_recording.redis_url, key_prefix=prefix))
    # the recorder wrote this one's clip range; the other's is [start - 5 s, end + 5 s]
    a = store_alert(store, camera, s0 + 2.0, s0 + 2.5)
    store.client.hset(store.alert_key(a), mapping={"clip_from": s0 + 1, "clip_to": s0 + 4})
    store_alert(store, camera, s0 + 16.0, s0 + 16.5)
    # a forged clip range (longer than any clip) is not believed: its alert's own times are
    forged = store_alert(store, camera, s0 + 16.2, s0 + 16.3)
    store.client.hset(store.alert_key(forged), mapping={"clip_from": s0 + 4, "clip_to": s0 + 1e6})
    inside = [(s0 + 1, s0 + 4), (s0 + 11.0, s0 + 21.5)]
    out = tmp_path / "dataset"
    argv = ["dataset", "collect", "-c", cfg, "--recordings", camera, "--since", "1h"]
    argv += ["--around-alerts", "-o", str(out), *NO_DETECT, "--periodic", "0.45", "--dedup", "0"]
    code, stdout, err = run_vigil(argv, capsys, monkeypatch)
    assert code == 0, err
    times = [r["capture_ts"] for r in _records(out)]  # rounded to the ms in the manifest
    assert all(any(t0 - 1e-3 <= t < t1 for t0, t1 in inside) for t in times), (times, inside)
    for t0, t1 in inside:  # every range sampled, every 0.5 s
        got = [t for t in times if t0 - 1e-3 <= t < t1]
        assert abs(len(got) - (t1 - t0) / 0.5) <= 2, (t0 - s0, t1 - s0, [t - s0 for t in got])


@pytest.mark.integration
def test_dedup_drops_identical_recorded_frames(tmp_path, capsys, monkeypatch, camera_recording):
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    client = redis.Redis.from_url(camera_recording.redis_url)
    index = SegmentIndex(client, RedisKeys(prefix))
    root = tmp_path / "recordings"
    start = camera_recording.began  # within the last hour
    path = make_mp4(segment_path(root, "still", start), 160, 120, 4.0, source="color=c=gray")
    index.add(Segment("still", path.relative_to(root), start, start + 4.0, 1, 40))
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": camera_recording.redis_url, "key_prefix": prefix},
                "recordings": {"dir": str(root)},
            }
        )
    )
    base = ["dataset", "collect", "-c", str(cfg), "--recordings", "still", "--since", "1h"]
    base += [*NO_DETECT, "--periodic", "0.9"]
    try:
        code, with_dedup, err = run_vigil([*base, "-o", str(tmp_path / "a")], capsys, monkeypatch)
        assert code == 0, err
        code, without, err = run_vigil(
            [*base, "-o", str(tmp_path / "b"), "--dedup", "0"], capsys, monkeypatch
        )
        assert code == 0, err
    finally:
        cleanup(client, prefix)
    assert len(_records(tmp_path / "a")) == 1, with_dedup
    assert "1 kept (periodic 1); dropped: 4 no policy fired, 3 near-duplicate(s)" in with_dedup
    assert len(_records(tmp_path / "b")) == 4, without


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--since", "24"], "--since '24': expected a duration"),
        (["--since=-1h"], "--since '-1h': expected a duration"),
        (["--since", "2y"], "--since '2y': expected a duration"),
        (["--recordings", "a b"], "--recordings: 'a b' is not a camera id"),
    ],
)
def test_bad_since_or_camera_is_one_line_naming_it(argv, says, tmp_path, capsys, monkeypatch):
    base = ["dataset", "collect", "--recordings", "door", "-o", str(tmp_path / "d"), "--no-detect"]
    code, _, err = run_vigil([*base, *argv], capsys, monkeypatch)
    assert code == 2 and says in err and err.count("\n") == 1, err


@pytest.mark.integration
def test_unknown_camera_or_nothing_recorded_names_it(own, tmp_path, capsys, monkeypatch):
    cfg, camera, _, _, _, _ = own
    base = ["dataset", "collect", "-c", cfg, "-o", str(tmp_path / "d"), "--no-detect"]
    code, _, err = run_vigil([*base, "--recordings", f"{camera},nosuchcam"], capsys, monkeypatch)
    assert code == 2 and "camera 'nosuchcam': no recordings indexed" in err, err
    code, _, err = run_vigil([*base, "--recordings", camera, "--since", "1s"], capsys, monkeypatch)
    assert code == 2 and f"camera '{camera}': nothing recorded from " in err, err
    assert not (tmp_path / "d" / "images").exists()


@pytest.mark.integration
def test_an_unreadable_segment_is_skipped_with_one_log_line(
    own, tmp_path, capsys, monkeypatch, caplog
):
    cfg, camera, segments, root, _, _ = own
    broken = segment_path(root, camera, segments[1].start)
    broken.write_bytes(b"not an mp4 " * 100)
    out = tmp_path / "dataset"
    argv = ["dataset", "collect", "-c", cfg, "--recordings", camera, "--since", "1h"]
    argv += ["-o", str(out), *NO_DETECT, "--periodic", "0.9", "--dedup", "0", "--analyze-fps", "1"]
    with caplog.at_level("WARNING", logger="pipeline.record.frames"):
        code, stdout, err = run_vigil(argv, capsys, monkeypatch)
    assert code == 0, err
    assert f"from {len(segments) - 1} segment(s), 1 unreadable skipped" in stdout, stdout
    lines = [r.getMessage() for r in caplog.records if r.name == "pipeline.record.frames"]
    assert len(lines) == 1 and str(broken) in lines[0] and "skipped" in lines[0], lines
    times = [r["capture_ts"] for r in _records(out)]
    # none from the broken one (consecutive segments meet within a few ms: its neighbours'
    # first and last frames may lie that close to its ends)
    inside = [t for t in times if segments[1].start + 0.05 <= t < segments[1].end - 0.05]
    assert times and not inside, inside
