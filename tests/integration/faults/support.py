"""Helpers of the fault suite: stopping a worker against a clock, committed offsets, and
the invariants against the oracle (through ``test_pipeline_oracle``'s helper, so that a
new oracle is swapped in one place)."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import psutil
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from streams.pipeline.shutdown import SHUTDOWN_BOUND  # the bound the README states
from streams.profiles.store import event_partitions
from streams.settings import Settings

__all__ = ["SHUTDOWN_BOUND", "committed_offsets", "family", "lag", "stop_timed"]


def family(proc: subprocess.Popen) -> list[psutil.Process]:
    """The worker and every process it started (fold processes, the trigger process)."""
    me = psutil.Process(proc.pid)
    return [me, *me.children(recursive=True)]


def stop_timed(proc: subprocess.Popen, sig: signal.Signals, limit: float,
               group: bool = False) -> float:
    """Send ``sig`` to the worker (``group``: to its whole process group, as a terminal's
    Ctrl-C does) and return the seconds until it and every child it started have exited;
    fail when that takes longer than ``limit`` (the processes are then SIGKILLed). Blocks."""
    procs = family(proc)
    started = time.monotonic()
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise AssertionError(f"the worker did not stop within {limit:.0f}s of {sig.name}"
                             ) from None
    _, alive = psutil.wait_procs(procs, timeout=max(0.1, limit - (time.monotonic() - started)))
    elapsed = time.monotonic() - started
    assert not alive, f"processes outlived the worker: {[p.pid for p in alive]}"
    return elapsed


async def committed_offsets(settings: Settings) -> dict:
    """The worker group's committed offset per event partition (absent: none)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(settings.consumer_group)
        return {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
    finally:
        await admin.close()


async def lag(settings: Settings) -> dict:
    """Messages behind per event partition (end offset minus committed offset)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        tps = await event_partitions(settings)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    committed = await committed_offsets(settings)
    return {tp: ends[tp] - committed.get(tp, 0) for tp in tps}
