"""The notifier: alert events from ``vigil.alerts`` to webhooks and MQTT (Home Assistant),
at least once, nothing lost (docs/notify.md).

- :mod:`alerts.notify.config`: the ``notify:`` section (one model per sink type);
- :mod:`alerts.notify.service`: the consumer group loop, settling and committing offsets;
- :mod:`alerts.notify.delivery`: per-sink queues, retries, rate limits, the dead-letter topic;
- :mod:`alerts.notify.sinks`: the sink seam (``sinks/base.py``) and the webhook and MQTT sinks.
"""
