"""The Faust app, built by a factory so that tests and each worker build their own."""

from __future__ import annotations

import faust

from streams.compat import streams_transport
from streams.pipeline.tuning import tune_gc
from streams.settings import Settings

__all__ = ["create_app", "tune_gc", "use_streams_transport"]


def use_streams_transport(app: faust.App) -> None:
    """Give ``app`` the transport of ``streams.compat.streams_transport``; call before
    any topic or agent is declared on it (they create the default transport)."""
    app.transport = streams_transport()(app.conf.broker_consumer, app)


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
    use_streams_transport(app)

    # Each domain registers its agents; the import is here so building an app has no
    # import-time side effects.
    from streams.profiles.agents import register as register_profiles
    from streams.triggers.agents import register as register_triggers

    register_profiles(app, settings)
    register_triggers(app, settings)
    # No agent consumes a topic: the profile stage has its own consumer in the group
    # (``streams.pipeline.source``). Faust's consumer would join the same group with
    # another assignor (the broker refuses a group of mixed protocols) and read nothing.
    app.boot_strategy.enable_kafka_consumer = False
    return app
