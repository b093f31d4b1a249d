"""One process of the trigger stage's loops alone (``TriggerStage.run`` with the real
clock, the worker's own message producer), for ``streams bench triggers``: no Faust, no
profile stage, so the due-loop is measured by itself. Prints ``ready`` once its producer
is connected; stops on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import signal

# The worker has the profile store imported, which has psycopg decode JSON with orjson;
# without it the emitter would decode profiles with the standard library's json, slower.
import streams.profiles.store  # noqa: F401
from streams.db import async_engine
from streams.settings import load_settings
from streams.triggers.agents import make_message_producer, prepare_trigger_process
from streams.triggers.stage import TriggerStage, connections


async def _run() -> None:
    settings = load_settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The same pool and producer as the worker's trigger task (streams.triggers.agents).
    # The trigger process's tuning, without the niceness: these emitters are measured
    # alone (nothing of the pipeline competes), on a machine that other work shares.
    prepare_trigger_process(nice=0)
    engine = async_engine(settings, pool_size=connections(settings), max_overflow=0)
    producer = make_message_producer(settings)
    await producer.start()
    try:
        stage = TriggerStage(settings, engine, producer)
        print("ready", flush=True)
        await stage.run(stop)
    finally:
        await producer.stop()
        await engine.dispose()


def main() -> None:
    """Run until signalled. Blocks."""
    asyncio.run(_run())


if __name__ == "__main__":
    main()
