"""Anomaly rules, the alert service, the Redis alert store and subscribers."""
