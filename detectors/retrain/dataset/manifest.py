"""``manifest.jsonl``: where every image came from; an append-only log several writers share."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from detectors.retrain.dataset.layout import MANIFEST, Problem, atomic_write

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


class Manifest:
    """``manifest.jsonl``: an append-only log (last line per image wins), compacted by :meth:`save`.

    Several writers may share a folder (live collectors on several workers, an offline tool):
    every append and every compaction holds ``.manifest.lock`` (``flock``), and :meth:`save` merges
    this object's pending changes into what is on disk *now*, so nobody's lines are lost.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.path = self.root / MANIFEST
        self.records: dict[str, dict[str, Any]] = {}
        self.problems: list[Problem] = []
        self._pending: dict[str, dict[str, Any]] = {}
        self._forgotten: set[str] = set()

    @classmethod
    def load(cls, root: str | Path) -> Manifest:
        m = cls(root)
        m.records, m.problems = _read_manifest(m.path)
        return m

    @contextlib.contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        if fcntl is None:  # no flock on this platform: single writer only
            yield
            return
        fd = os.open(self.root / ".manifest.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def append(self, rec: dict[str, Any]) -> None:
        """Add or change an image's record, on disk at once."""
        self.records[rec["image"]] = {**self.records.get(rec["image"], {}), **rec}
        self._write_line(rec)

    def remove(self, image: str, why: str) -> None:
        """Delete an image's record, on disk at once (a tombstone line)."""
        self.records.pop(image, None)
        self._pending.pop(image, None)
        self._write_line({"image": image, "removed": True, "why": why})

    def update(self, image: str, **fields: Any) -> None:
        """Change fields in memory; :meth:`save` writes them."""
        self.records.setdefault(image, {"image": image}).update(fields)
        self._pending.setdefault(image, {"image": image}).update(fields)

    def forget(self, image: str) -> None:
        """Drop a record (its file is gone) when :meth:`save` runs."""
        self.records.pop(image, None)
        self._pending.pop(image, None)
        self._forgotten.add(image)

    def _write_line(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, separators=(",", ":"), sort_keys=True) + "\n"
        with self._locked():
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)

    def save(self) -> None:
        """Compact the log to one line per live image, keeping other writers' lines (atomic)."""
        with self._locked():
            disk, _ = _read_manifest(self.path)
            for image, fields in self._pending.items():
                if image in disk or (self.root / image).is_file():
                    disk.setdefault(image, {"image": image}).update(fields)
            for image in self._forgotten:
                disk.pop(image, None)
            lines = [
                json.dumps(r, separators=(",", ":"), sort_keys=True)
                for r in sorted(disk.values(), key=lambda r: r["image"])
            ]
            atomic_write(self.path, "".join(x + "\n" for x in lines))
        self.records = disk
        self._pending.clear()
        self._forgotten.clear()


def _read_manifest(path: Path) -> tuple[dict[str, dict[str, Any]], list[Problem]]:
    records: dict[str, dict[str, Any]] = {}
    problems: list[Problem] = []
    if not path.is_file():
        return records, problems
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
                if not isinstance(rec, dict) or not isinstance(rec.get("image"), str):
                    raise ValueError("not an object with an 'image' path")
            except ValueError as e:
                problems.append(Problem(MANIFEST, f"malformed manifest line ({e})", n))
                continue
            if rec.get("removed"):
                records.pop(rec["image"], None)
            else:
                records[rec["image"]] = {**records.get(rec["image"], {}), **rec}
    return records, problems


def record_ts(rec: dict[str, Any]) -> float:
    """A manifest record's capture time (0.0 when missing or malformed)."""
    try:
        return float(rec.get("capture_ts") or 0.0)
    except (TypeError, ValueError):
        return 0.0
