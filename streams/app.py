"""The Faust app, built by a factory so that tests and each worker build their own."""

from __future__ import annotations

import gc

import faust

from streams.settings import Settings

# A worker allocates several small containers per event (decoded records, profile
# documents, Faust's own event objects). With CPython's default thresholds (700, 10, 10)
# that triggers a full collection every ~70,000 allocations, each walking every object
# the process holds (Faust, aiokafka, SQLAlchemy...): measured at about half the fold's
# Python time. Collecting the young generation every 50,000 allocations instead, and
# freezing what exists at startup out of the collector's way, keeps cycles collected
# (memory stays flat) at a fraction of the cost.
GC_THRESHOLDS = (50_000, 20, 100)


# How long the broker may hold a fetch that found no new records. Faust hard-codes
# 1,500 ms for its consumer; aiokafka fetches only the partitions whose previous records
# have been handed over, so at moderate rates a fetch often waits out the whole 1.5 s
# while records queue up on the other partitions: it was most of the produce -> commit
# latency at half load (p50 about 2 s). 100 ms costs a few empty fetches per second.
FETCH_MAX_WAIT_MS = 100


def _streams_transport() -> type:
    """Faust's aiokafka transport with ``FETCH_MAX_WAIT_MS`` for its worker consumer."""
    from faust.transport.drivers import aiokafka as driver

    class ConsumerThread(driver.AIOKafkaConsumerThread):
        def _create_worker_consumer(self, transport):  # noqa: ANN001, ANN202 - faust's
            consumer = super()._create_worker_consumer(transport)
            # Read by the consumer when it starts its fetcher (not started yet here).
            consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # noqa: SLF001
            return consumer

    class Consumer(driver.Consumer):
        def _new_consumer_thread(self) -> ConsumerThread:
            return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    class Transport(driver.Transport):
        pass

    Transport.Consumer = Consumer
    return Transport


def use_streams_transport(app: faust.App) -> None:
    """Give ``app`` the transport with ``FETCH_MAX_WAIT_MS``; call before any topic or
    agent is declared on it (they create the default transport)."""
    app.transport = _streams_transport()(app.conf.broker_consumer, app)


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
