"""Where a stage's batches run: in fold processes beside the worker (``processes`` > 0,
``STREAMS_FOLD_PROCESSES`` for the profile stage) or in the worker's own event loop.

Why other processes. Per event, a worker spends about as much CPU in Faust itself
(fetching, events, acknowledgements) as in a stage's decoding and writing. In one
process the two add up on one core while the machine's other core waits. With fold
processes they overlap: Faust gathers the next batch while earlier ones are written; and
with two, one works while the other waits on PostgreSQL. The cost is an interpreter per
fold process (its own memory and connection pool) and pickling the raw records across
(a few microseconds per event).

The fold processes are a ``ProcessPoolExecutor``, started with ``spawn`` (the worker has
threads; forking it would copy their locks). They ignore SIGINT and SIGTERM: the worker
stops them when it shuts down, so a batch is never cut short by a Ctrl-C aimed at the
worker. They die with the worker (``PR_SET_PDEATHSIG``), so a SIGKILLed worker leaves no
process behind; a transaction in progress then either commits or rolls back, and the
batch's offsets were not committed in either case, so it is read again and deduplicated.
If a fold process dies on its own, new ones are started and the batch is run again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ctypes
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from concurrent.futures.process import BrokenProcessPool

from streams.compat import kill_pool_processes
from streams.pipeline.batch import BatchResult, process_batch
from streams.pipeline.policy import RetryPolicy
from streams.pipeline.stage import Raw, Stage, StageFactory
from streams.pipeline.tuning import tune_gc
from streams.settings import Settings, configure_logging

log = logging.getLogger(__name__)


class InProcessExecutor:
    """Runs batches in the calling process's event loop: the worker's (no fold
    processes), or a fold process's own. Builds its stage on first use."""

    def __init__(self, settings: Settings, factory: StageFactory):
        self.settings = settings
        self.factory = factory
        self.in_flight = 1
        self.policy = RetryPolicy(tries=settings.profile_retries)
        self._stage: Stage | None = None

    def stage(self) -> Stage:
        if self._stage is None:
            self._stage = self.factory(self.settings)
        return self._stage

    async def run(self, raws: Sequence[Raw]) -> BatchResult:
        """Process one batch (see ``process_batch``)."""
        return await process_batch(self.stage(), raws, self.policy)

    async def start(self) -> None:
        self.stage()

    def close(self, kill: bool = False) -> None:
        pass


class ProcessExecutor:
    """Runs batches in child processes (see the module docstring), one batch per
    process at a time."""

    def __init__(self, settings: Settings, factory: StageFactory, processes: int):
        self.settings = settings
        self.factory = factory
        self.in_flight = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._closed = False

    def _start(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=self.in_flight, mp_context=multiprocessing.get_context("spawn"),
                initializer=_child_init, initargs=(self.settings, self.factory, os.getpid()))
        return self._pool

    async def start(self) -> None:
        """Start every fold process now rather than on the first batches (each takes a
        second or two to import its modules), so that they do not delay the first
        events and are there from the start (as a worker's memory, for instance)."""
        loop = asyncio.get_running_loop()
        pool = self._start()
        # The pool starts a process per task submitted while none is idle; the pause
        # keeps each task busy until all have been handed out.
        await asyncio.gather(*(loop.run_in_executor(pool, _child_ready, 0.2)
                               for _ in range(self.in_flight)))

    async def run(self, raws: Sequence[Raw]) -> BatchResult:
        """Process one batch in a fold process; if the process dies, start new ones and
        run the batch again. Raises RuntimeError once closed."""
        loop = asyncio.get_running_loop()
        while True:
            if self._closed:
                raise RuntimeError("the executor is closed")
            pool = self._start()
            try:
                return await loop.run_in_executor(pool, _child_run, list(raws))
            except BrokenProcessPool:
                if self._closed:
                    raise
                # The fold process died (killed, out of memory). Whatever it did with this
                # batch either committed or rolled back; running it again is safe.
                log.error("a fold process died; starting new ones and running the batch "
                          "again")
                if self._pool is pool:  # not already replaced for another batch
                    self._pool = None
                    pool.shutdown(wait=False, cancel_futures=True)
                await asyncio.sleep(0.5)

    def close(self, kill: bool = False) -> None:
        """Stop the fold processes after their current batches (does not block); with
        ``kill``, at once: for batches that cannot finish (the database is down), whose
        offsets were not committed, so nothing is lost."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is None:
            return
        if kill:
            kill_pool_processes(pool)
        pool.shutdown(wait=False, cancel_futures=True)


def make_executor(settings: Settings, factory: StageFactory,
                  processes: int) -> InProcessExecutor | ProcessExecutor:
    """Fold processes when ``processes`` > 0, else the worker's own loop."""
    if processes:
        return ProcessExecutor(settings, factory, processes)
    return InProcessExecutor(settings, factory)


# --- in the fold process ---------------------------------------------------------------
_child: dict = {}
PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """In a child process of the worker: be SIGKILLed when the worker dies (Linux's
    ``PR_SET_PDEATHSIG``), so a SIGKILLed worker leaves nothing behind; exit now if it
    is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the parent's pipe still ends us
        pass
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


def _child_init(settings: Settings, factory: StageFactory, parent: int) -> None:
    """Runs once in the fold process: die with the worker, ignore the signals meant for
    it, then build the event loop and the in-process executor that every batch uses."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    configure_logging(settings, "fold")
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _child.update(loop=loop, executor=InProcessExecutor(settings, factory))
    tune_gc()


def _child_ready(pause: float) -> int:
    time.sleep(pause)
    return os.getpid()


def _child_run(raws: list[Raw]) -> BatchResult:
    return _child["loop"].run_until_complete(_child["executor"].run(raws))
