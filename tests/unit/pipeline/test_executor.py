"""Fold processes (the executor): a batch run in one gives what running it in the
worker's loop gives (tests/integration); here, what needs no database: stopping a fold
process that is stuck waiting for an unreachable database."""

from __future__ import annotations

import asyncio
from concurrent.futures.process import BrokenProcessPool

import orjson
import psutil
import pytest

from streams.pipeline.executor import ProcessExecutor
from streams.profiles.stage import make_profile_stage
from streams.settings import load_settings


def fold_children() -> list[psutil.Process]:
    """This process's fold processes (not the session's broker or database, nor
    multiprocessing's resource tracker)."""
    return [c for c in psutil.Process().children()
            if "multiprocessing.spawn" in " ".join(c.cmdline())]


async def test_close_with_kill_ends_a_fold_process_stuck_on_a_dead_database():
    # Port 1 refuses connections: the fold process retries forever, as it must.
    settings = load_settings(database_url="postgresql://u:p@127.0.0.1:1/db",
                             fold_processes=1)
    folder = ProcessExecutor(settings, make_profile_stage, 1)
    doc = {"type": "page", "messageId": "m1", "anonymousId": "a", "name": "Home",
           "timestamp": "2026-03-01T10:00:00Z"}
    folding = asyncio.ensure_future(folder.run([("events.view", 0, 0, b"a", orjson.dumps(doc))]))
    for _ in range(100):
        if fold_children():
            break
        await asyncio.sleep(0.1)
    children = fold_children()
    assert children, "no fold process started"
    await asyncio.sleep(1.0)
    assert not folding.done(), "the fold gave up on an unreachable database"
    folder.close(kill=True)
    with pytest.raises(BrokenProcessPool):
        await asyncio.wait_for(folding, timeout=10)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    with pytest.raises(RuntimeError, match="closed"):
        await folder.run([])


async def test_start_brings_up_every_fold_process_and_close_ends_them():
    folder = ProcessExecutor(load_settings(), make_profile_stage, 2)
    try:
        await folder.start()
        children = fold_children()
        assert len(children) == 2
    finally:
        folder.close()
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive
