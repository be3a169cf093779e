"""``vigil recordings reindex | export``: the index rebuilt from the files and a cut written, from
a config file; bad input is one line naming it, exit code 2."""

from __future__ import annotations

import pytest
import yaml

from pipeline.record.export import iso
from tests.support.cli import run_vigil
from tests.support.recordings import CLIP_GOP_S, decode_errors, ffprobe_duration


def _config(tmp_path, rec) -> str:
    path = tmp_path / "vigil.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "redis": {"url": rec.redis_url, "key_prefix": rec.key_prefix},
                "recordings": {"dir": str(rec.root)},
            }
        )
    )
    return str(path)


@pytest.mark.integration
def test_reindex_then_export_from_the_config(camera_recording, tmp_path, capsys, monkeypatch):
    rec = camera_recording
    cfg = _config(tmp_path, rec)
    rec.index.clear(rec.camera)
    try:
        code, out, err = run_vigil(["recordings", "reindex", "-c", cfg], capsys, monkeypatch)
        assert code == 0, err
        assert "cam1: 3 segments" in out and "indexed 3 segments; skipped 0 files" in out
        assert rec.index.segments(rec.camera, rec.began - 60, rec.ended + 60) != []
        t0 = rec.segments[0].start + 2
        clip = tmp_path / "clip.mp4"
        argv = ["recordings", "export", "cam1", "-c", cfg, "--from", iso(t0), "--to", str(t0 + 5)]
        code, out, err = run_vigil([*argv, "-o", str(clip)], capsys, monkeypatch)
        assert code == 0, err
        assert out.startswith(f"{clip}: cam1 from ") and "gap" not in out
        assert decode_errors(clip) == ""
        assert ffprobe_duration(clip) == pytest.approx(5.0, abs=CLIP_GOP_S)
    finally:  # the other tests read this index: put it back as the recorder wrote it
        rec.index.replace(rec.camera, rec.segments)


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["--from", "yesterday", "--to", "0"], "--from 'yesterday': not a time"),
        (["--from", "0", "--to", "2026-13-01T00:00:00"], "--to '2026-13-01T00:00:00': not a time"),
        (["--from", "100", "--to", "50"], "must be after --from"),
    ],
)
def test_export_bad_times_are_one_line_naming_the_option(argv, says, tmp_path, capsys, monkeypatch):
    code, out, err = run_vigil(
        ["recordings", "export", "cam1", *argv, "-o", str(tmp_path / "x.mp4")], capsys, monkeypatch
    )
    assert code == 2 and out == ""
    assert err.startswith("vigil: ") and says in err and err.count("\n") == 1, err


def test_export_bad_camera_and_reindex_without_the_folder(tmp_path, capsys, monkeypatch):
    code, _, err = run_vigil(
        ["recordings", "export", "../x", "--from", "0", "--to", "1", "-o", "x.mp4"],
        capsys,
        monkeypatch,
    )
    assert code == 2 and "camera: invalid camera id '../x'" in err and err.count("\n") == 1
    cfg = tmp_path / "vigil.yaml"
    cfg.write_text(yaml.safe_dump({"recordings": {"dir": str(tmp_path / "none")}}))
    code, _, err = run_vigil(["recordings", "reindex", "-c", str(cfg)], capsys, monkeypatch)
    assert code == 2 and f"recordings.dir {tmp_path / 'none'}: no such folder" in err
