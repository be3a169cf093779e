"""Anomaly rules, the alert service, the Redis alert store and subscribers.

``alerts.subscribe(cfg, camera=..., rule=...)`` iterates over alerts as they arrive (see
``alerts/subscribe.py``).
"""

from alerts.subscribe import subscribe

__all__ = ["subscribe"]
