"""The Kafka wire layer: every Herald client's connection settings, the record types and headers,
one producer and one consumer factory. Part of the ground: it imports nothing of Herald above it.

- ``config``: librdkafka and aiokafka/Faust configuration from ``Settings`` (security, TLS, extras)
- ``records``: ``InRecord`` / ``OutRecord`` and the header names Herald sets
- ``producer``: ``Producer``, the one produce loop (full queue, sizes, delivery reports)
- ``consumer``: ``consumer()``, the one consumer factory, and ``to_in_record``
"""
