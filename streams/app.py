"""The Faust app, built by a factory so that tests and each worker build their own."""

from __future__ import annotations

import gc

import faust

from streams.compat import streams_transport
from streams.settings import Settings

# A worker allocates several small containers per event (decoded records, profile
# documents, Faust's own event objects). With CPython's default thresholds (700, 10, 10)
# that triggers a full collection every ~70,000 allocations, each walking every object
# the process holds (Faust, aiokafka, SQLAlchemy...): measured at about half the fold's
# Python time. Collecting the young generation every 50,000 allocations instead, and
# freezing what exists at startup out of the collector's way, keeps cycles collected
# (memory stays flat) at a fraction of the cost.
GC_THRESHOLDS = (50_000, 20, 100)


def use_streams_transport(app: faust.App) -> None:
    """Give ``app`` the transport of ``streams.compat.streams_transport``; call before any topic or
    agent is declared on it (they create the default transport)."""
    app.transport = streams_transport()(app.conf.broker_consumer, app)


def tune_gc() -> None:
    """Set the worker process's garbage-collector thresholds (``GC_THRESHOLDS``) and
    freeze the objects that exist now (modules, the app) out of future collections.
    Call once, after the app is built and before it runs. Process-wide."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app and register every agent on it. Does not connect to anything."""
    datadir = settings.data_dir.resolve() / "worker"
    datadir.mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        settings.consumer_group,
        broker=f"kafka://{settings.kafka_bootstrap}",
        # No Faust tables: profiles live in PostgreSQL, so no changelog topics or RocksDB.
        store="memory://",
        datadir=str(datadir),
        # Several workers share partitions; a web server each would fight over a port.
        web_enabled=False,
        # The leader-election topic is only needed by tables and timers across workers.
        topic_disable_leader=True,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=settings.commit_interval,
        broker_commit_every=settings.batch_size,
        producer_acks=-1,
        producer_max_request_size=1_048_576,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
        # Generous: one batch is one database transaction, which can wait on a slow disk.
        broker_max_poll_interval=300.0,
        worker_redirect_stdouts=False,
        logging_config=None,
    )
    app.streams_settings = settings  # type: ignore[attr-defined]
    use_streams_transport(app)

    # Each domain registers its agents; the import is here so building an app has no
    # import-time side effects.
    from streams.profiles.agents import register as register_profiles

    register_profiles(app, settings)
    return app
