"""Ingest: cameras in, detection messages out.

Readers decode each camera (``capture``), motion gating decides which frames need the detector
(``motion``), the worker batches them through the detector it was given and publishes one
``detection.v1`` message per frame on Kafka (``worker``, ``messages``); recent frames go to Redis
for snapshots (``frame_store``). Which worker owns which camera is decided by Kafka over the
compacted camera registry topic (``registry``).
"""
