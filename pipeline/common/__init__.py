"""The shared leaf every stage may import, and that imports no other Vigil module.

What lives here is what two stages must agree on: the strict config base and its error text,
user errors and their exit code, the Kafka and Redis client settings and key names, the frame /
detection / camera-id / message-schema contracts, one JSON codec and one box IoU. Anything that
belongs to a single stage lives in that stage (docs/architecture.md).
"""
