"""A Faust worker whose agent does nothing with its batches: the baseline that
``streams bench pipeline`` compares the profile stage with (same topics, same batching,
same offset commits, no decoding and no database)."""

from __future__ import annotations

import faust
from faust import Worker

from streams.app import tune_gc, use_streams_transport
from streams.settings import load_settings


def main() -> None:
    settings = load_settings()
    app = faust.App(
        settings.consumer_group, broker=f"kafka://{settings.kafka_bootstrap}",
        store="memory://", datadir=str(settings.data_dir.resolve() / "noop"),
        web_enabled=False, topic_disable_leader=True, topic_allow_declare=False,
        consumer_auto_offset_reset="earliest", broker_commit_interval=settings.commit_interval,
        broker_commit_every=settings.batch_size,
        stream_buffer_maxsize=max(4096, settings.batch_size * 2),
        worker_redirect_stdouts=False, logging_config=None,
    )
    (settings.data_dir.resolve()).mkdir(parents=True, exist_ok=True)
    use_streams_transport(app)  # the same consumer settings as ``streams worker``
    topics = app.topic(*settings.event_topics, key_serializer="raw", value_serializer="raw")

    @app.agent(topics, name="do_nothing")
    async def do_nothing(stream):
        async for _batch in stream.take_events(settings.batch_size, within=settings.batch_seconds):
            pass

    tune_gc()  # the same collector settings as ``streams worker``: a fair baseline
    Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
