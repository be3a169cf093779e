"""Retraining: collect footage the cameras saw, label it with the production model (and reviews),
fine-tune a student from pretrained weights, evaluate before/after, promote only if better, and
let ingest workers hot-reload the promoted model. ``workflow`` is the whole procedure as one call.

Builds on the detector core (``detectors.*``); the core never imports this package.
"""
