"""A worker's shutdown within a bound: SIGTERM or Ctrl-C stops ``streams worker`` (Faust,
its fold processes and its trigger process) within ``SHUTDOWN_BOUND`` seconds, even with a
batch stuck on a lock or the database gone, and acknowledges nothing it did not store.

Why a bound is needed. The runner holds a batch until it is stored, and one batch that
cannot be stored (a row locked by another session, the database down: waited out by the
retry policy) would keep a worker from stopping at all. (When the stage was a Faust agent,
Faust's consumer also waited without a limit for every event it handed out to be
acknowledged, ``stream_wait_empty``; the stage now has its own consumer, see
``streams.pipeline.source``, and the setting is still cleared for any agent.)

What happens instead, in order (``StreamsWorker.on_stop``, before Faust stops the app):

1. a deadline is armed: past ``SHUTDOWN_BOUND`` less a margin the process exits (status 1)
   whatever it is doing. That is safe at any moment: offsets are committed only after
   their batch is stored, and the fold and trigger processes die with the worker
   (``PR_SET_PDEATHSIG``);
2. every stage runner drains (``StageRunner.drain``): batches in flight get
   ``DRAIN_GRACE`` seconds to be stored and acknowledged, then are cancelled and their
   fold processes killed, unacknowledged; no further batch is run;
3. the app stops its services: the stage's (``register_stage``) commits what was
   acknowledged and leaves the group; then the trigger process (which finishes its round
   within its own grace).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import weakref
from typing import Any

import faust

from streams.pipeline.runner import DRAIN_GRACE, StageRunner

log = logging.getLogger(__name__)

# The bound the README states: from SIGTERM or Ctrl-C to every process of the worker gone.
SHUTDOWN_BOUND = 30.0
# The hard exit comes this much before the bound: the kernel then ends the fold and
# trigger processes (parent-death signal), which takes a moment.
EXIT_MARGIN = 3.0

_runners: weakref.WeakKeyDictionary[Any, weakref.WeakSet[StageRunner]] = (
    weakref.WeakKeyDictionary())


def track(app: Any, runner: StageRunner) -> None:
    """Have ``app``'s worker drain ``runner`` when it stops."""
    _runners.setdefault(app, weakref.WeakSet()).add(runner)


async def drain(app: Any, grace: float = DRAIN_GRACE) -> int:
    """Drain every runner of ``app`` at once (see ``StageRunner.drain``), then tell Faust
    not to wait for events left unacknowledged. Returns how many batches were left
    unacknowledged. Blocks up to ``grace`` seconds (and a few for the cancellations)."""
    runners = list(_runners.get(app, ()))
    left = sum(await asyncio.gather(*(r.drain(grace) for r in runners)))
    # Every event still unacknowledged now belongs to a batch the runners will not run:
    # waiting for it would wait forever. Faust still commits what was acknowledged.
    app.conf.stream_wait_empty = False
    return left


def exit_if_still_running(seconds: float, why: str) -> threading.Timer:
    """Exit the process (status 1) after ``seconds`` unless it has ended by then; ``why``
    names the shutdown in the log line. Does not block; returns the (daemon) timer."""

    def bail() -> None:
        log.critical("shutdown did not finish within %.0fs %s; exiting", seconds, why)
        logging.shutdown()
        os._exit(1)

    timer = threading.Timer(seconds, bail)
    timer.daemon = True
    timer.start()
    return timer


class StreamsWorker(faust.Worker):
    """Faust's worker, stopping within ``SHUTDOWN_BOUND`` (see the module docstring)."""

    async def on_stop(self) -> None:
        """Arm the deadline and drain the stage runners before Faust stops the app
        (mode stops a service's own ``on_stop`` before its children). Blocks at most
        ``DRAIN_GRACE`` seconds and a few more."""
        exit_if_still_running(SHUTDOWN_BOUND - EXIT_MARGIN, "of the signal to stop")
        left = await drain(self.app, DRAIN_GRACE)
        if left:
            log.warning("stopping with %d batch(es) unacknowledged; the next worker reads "
                        "them again", left)
        await super().on_stop()
