"""Moved to ``pipeline/bench/notify.py`` (``python3 -m pipeline.bench.notify``, BENCHMARKS.md):
this thin wrapper keeps the old command working."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.bench.notify import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
