"""The notifier: alert events from ``vigil.alerts`` to webhooks and MQTT (Home Assistant),
at least once, nothing lost (docs/notify.md).

- :mod:`alerts.notify.config`: the ``notify:`` section (each sink read by its registered model);
- :mod:`alerts.notify.service`: the consumer group loop, settling and committing offsets;
- :mod:`alerts.notify.delivery`: per-sink queues, retries, rate limits, the dead-letter topic;
- :mod:`alerts.notify.sinks`: the sink seam (``sinks/base.py``) and one module per sink type,
  each its config model and its class.
"""
