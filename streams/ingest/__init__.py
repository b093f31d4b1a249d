"""Ingestion: the Segment-compatible collector, event validation, routing and dead letters.

Where an event enters: ``views.py`` (HTTP) or a direct Kafka producer; ``logic.py``
normalizes, validates and routes it (pure); ``store.py`` writes to Kafka.
"""
