"""The Vigil Console: an HTTP API (FastAPI) and a web UI for the three daily jobs, connect
cameras, follow alerts, improve the detector, plus rule preview on recorded detections.

A composition layer like the CLI: it reads and writes what the stages own (the camera registry,
the live rules, the alert store, the model registry, the dataset) through their own modules.
docs/console.md describes the pages, the API, the roles and the preview's semantics.
"""
