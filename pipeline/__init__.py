"""Camera ingest, camera registry, orchestration and the ``vigil`` CLI."""

__version__ = "0.1.0"
