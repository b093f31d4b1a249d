"""The trigger stage in the worker: a Faust task starts its plan and emit loops in a
process of their own beside the worker (and starts another if it dies), in every worker;
the workers share the work through row locks.

Why another process. The worker's own process consumes and batches every event and runs
the stage runner's bookkeeping; the loops there would share its one core and its event
loop with that, and a slow round would delay the next batch. The trigger process dies
with the worker (``PR_SET_PDEATHSIG``), ignores Ctrl-C (the worker stops it), and
finishes its round on SIGTERM: a round is one transaction, and a message produced but
not yet marked sent is produced again later with the same id.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
from collections.abc import Callable
from typing import Any

import faust
from aiokafka import AIOKafkaProducer

from streams.settings import Settings

log = logging.getLogger(__name__)

# How long a stopping worker waits for the trigger process to finish its round.
STOP_GRACE = 10.0
# How often the worker tells the trigger process its profile stage's backlog (seconds).
BACKLOG_EVERY = 0.25


def make_message_producer(settings: Settings) -> AIOKafkaProducer:
    """The producer of ``messages.personalized``: idempotent, acks=all, so an
    acknowledged message is on every in-sync replica and a retried send is not
    duplicated by the broker."""
    # Record batches as large as the collector's (a round's messages, 1-2 KB each, fill a
    # few batches per partition instead of one every dozen messages at the 16 KB default).
    return AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                            enable_idempotence=True, linger_ms=5,
                            max_batch_size=settings.producer_max_batch_bytes,
                            max_request_size=1_048_576)


async def run_trigger_stage(settings: Settings, stop: asyncio.Event,
                            backlog: Callable[[], int] | None = None) -> None:
    """The trigger stage's loops on their own producer and connections, until ``stop``;
    ``backlog``: the profile stage's (``TriggerStage.run`` yields to it)."""
    from streams.db import async_engine
    from streams.triggers.rules import load_rules
    from streams.triggers.stage import TriggerStage, connections

    rules = load_rules(settings.triggers_file)
    producer = make_message_producer(settings)
    engine = async_engine(settings, pool_size=connections(settings), max_overflow=0)
    await producer.start()
    try:
        log.info("triggers: %d rule(s) from %s", len(rules.enabled()), rules.source)
        await TriggerStage(settings, engine, producer, rules, backlog=backlog).run(stop)
    finally:
        await producer.stop()
        await engine.dispose()


def prepare_trigger_process(nice: int) -> None:
    """Tune the process that runs the loops: the worker's garbage-collector settings
    (a collection walks every object the process holds; measured at a quarter of the
    emit loop's CPU with the defaults), and ``nice`` added to its niceness (the fold,
    which ingestion waits on, gets the cores first when they are saturated; the
    stage's work is durable in the feed and the schedule, and catches up after).
    Process-wide; call once, in the trigger process only."""
    import streams.triggers.stage  # noqa: F401 - imported before the freeze
    from streams.pipeline.tuning import tune_gc

    if nice:
        os.nice(nice)
    tune_gc()


def _trigger_process(settings: Settings, parent: int, backlog: Any) -> None:
    """The trigger process's main: die with the worker, stop on SIGTERM after the round.
    ``backlog``: a shared integer the worker keeps at its profile stage's backlog."""
    from streams.pipeline.executor import die_with_parent
    from streams.settings import configure_logging

    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    configure_logging(settings, "triggers")
    prepare_trigger_process(settings.triggers_nice)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.run_until_complete(run_trigger_stage(settings, stop, lambda: backlog.value))


async def _ended(process) -> None:  # noqa: ANN001 - a multiprocessing Process
    """Wait, without polling, until ``process`` exits (its sentinel becomes readable)."""
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    loop.add_reader(process.sentinel, ended.set)
    try:
        await ended.wait()
    finally:
        loop.remove_reader(process.sentinel)


async def _publish_backlog(shared: Any, every: float = BACKLOG_EVERY) -> None:
    """Keep ``shared.value`` at the backlog of the stages consuming in this process."""
    from streams.pipeline.source import backlog

    while True:
        shared.value = backlog()
        await asyncio.sleep(every)


def register(app: faust.App, settings: Settings) -> None:
    """Run the trigger stage beside ``app``'s workers (unless ``STREAMS_TRIGGERS_ENABLED``
    is false)."""
    if not settings.triggers_enabled:
        return

    @app.task
    async def send_personalized_messages() -> None:
        context = multiprocessing.get_context("spawn")  # the worker has threads: no fork
        # The profile stage's backlog, for the trigger process to yield to (one writer:
        # this task; a torn read is impossible for an aligned 64-bit integer).
        backlog = context.RawValue("q", 0)
        publisher = asyncio.ensure_future(_publish_backlog(backlog))
        process = None
        try:
            while True:
                process = context.Process(target=_trigger_process,
                                          args=(settings, os.getpid(), backlog),
                                          name="triggers")
                process.start()
                await _ended(process)
                log.error("the trigger process exited (code %s); starting another",
                          process.exitcode)
                await asyncio.sleep(1.0)
        finally:
            publisher.cancel()
            if process is not None and process.is_alive():
                process.terminate()  # SIGTERM: it finishes its round
                for _ in range(int(STOP_GRACE / 0.1)):
                    if not process.is_alive():
                        break
                    await asyncio.sleep(0.1)
                else:
                    process.kill()
                process.join(1)
