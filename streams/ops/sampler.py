"""The sampler: observe the cluster every interval, keep a bounded window, judge it.

It holds, in memory, the observations the status window needs (the window plus one
anchor before it) and one small chart point per interval for the history; both are
bounded deques, so memory does not grow with uptime.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from streams.events.time import utc_now
from streams.ops.logic import build_report, history_point, trim_window
from streams.ops.models import (
    HistoryPoint,
    LagReport,
    Observation,
    PipelineFigure,
    TriggerFigures,
)
from streams.settings import Settings

if TYPE_CHECKING:
    from streams.triggers.rules import RuleSet

log = logging.getLogger(__name__)

Observe = Callable[[], Awaitable[Observation]]
ReadFigures = Callable[[], Awaitable[Sequence[PipelineFigure]]]
ReadTriggers = Callable[[], Awaitable[TriggerFigures]]



class LagSampler:
    """Keeps the sliding window and the latest :class:`LagReport`.

    ``observe`` reads the cluster (``KafkaLagSource.observe`` in production, a fake in
    unit tests); ``figures`` reads the pipeline counts and ``triggers`` the trigger
    stage's per-rule figures, one after the other at the same cadence (they share the
    database connection). :meth:`sample_once` takes one
    sample; :meth:`start` runs it every ``interval`` seconds in a task until :meth:`stop`.
    """

    def __init__(
        self,
        observe: Observe,
        *,
        interval: float,
        window: float,
        history: float,
        dlq_topic: str,
        figures: ReadFigures | None = None,
        clock: Callable[[], datetime] = utc_now,
        observe_timeout: float | None = None,
        figures_every: float | None = None,
        triggers: ReadTriggers | None = None,
    ):
        if interval <= 0 or window < 2 * interval or history < window:
            raise ValueError(
                "sampler needs interval > 0, window >= 2 * interval and history >= window "
                f"(got interval={interval}, window={window}, history={history})"
            )
        self._observe = observe
        self._figures = figures
        self._triggers = triggers
        self.interval = interval
        self.window = timedelta(seconds=window)
        self.dlq_topic = dlq_topic
        self.clock = clock
        self.observe_timeout = observe_timeout or max(15.0, 3 * interval)
        # Counting rows of big tables is not free: the figures are read at most this often.
        self.figures_every = figures_every if figures_every is not None else max(interval, 15.0)
        self._figures_read_at: float | None = None
        self._last_figures: tuple[PipelineFigure, ...] = ()
        self._last_triggers = TriggerFigures()
        # Hard caps besides the time-based trimming, in case samples come faster than
        # the interval (``sample_once`` called by hand, say).
        self._observations: deque[Observation] = deque(maxlen=2 * math.ceil(window / interval) + 2)
        self._history: deque[HistoryPoint] = deque(maxlen=math.ceil(history / interval) + 1)
        self._since: dict = {}
        self._task: asyncio.Task | None = None
        self._sampled = asyncio.Event()
        self.samples_taken = 0
        self.report: LagReport = dataclasses.replace(
            build_report([], now=clock(), window=self.window, interval=interval,
                         dlq_topic=dlq_topic, since={})[0],
            error="no sample taken yet",
        )

    async def sample_once(self) -> LagReport:
        """Observe once, update the window and the report; returns the report.

        A failed observation leaves the window as it was and marks the last report with
        the error (the dashboard then says how stale it is). Blocks on the network.
        """
        loop = asyncio.get_running_loop()
        due = (self._figures is not None or self._triggers is not None) and (
            self._figures_read_at is None
            or loop.time() - self._figures_read_at >= self.figures_every)
        figures_task = asyncio.ensure_future(self._read_database()) if due else None
        try:
            async with asyncio.timeout(self.observe_timeout):
                observation = await self._observe()
        except Exception as exc:  # noqa: BLE001 - any failure is shown, the loop goes on
            if figures_task is not None:
                figures_task.cancel()
                with contextlib.suppress(BaseException):
                    await figures_task
            message = f"cannot read Kafka: {type(exc).__name__}: {exc}"[:500]
            log.warning("%s", message)
            self.report = dataclasses.replace(self.report, error=message)
            return self.report
        if figures_task is not None:
            self._last_figures, self._last_triggers = await figures_task
            self._figures_read_at = loop.time()
        figures = self._last_figures

        previous = self._observations[-1] if self._observations else None
        self._history.append(history_point(previous, observation, self.dlq_topic))
        kept = trim_window([*self._observations, observation], observation.at, self.window)
        self._observations.clear()
        self._observations.extend(kept)
        self.report, self._since = build_report(
            kept, now=observation.at, window=self.window, interval=self.interval,
            dlq_topic=self.dlq_topic, since=self._since, figures=figures,
            history=tuple(self._history),
        )
        self.report = dataclasses.replace(self.report, triggers=self._last_triggers)
        self.samples_taken += 1
        self._sampled.set()
        return self.report

    async def _read_database(self) -> tuple[tuple[PipelineFigure, ...], TriggerFigures]:
        figures = tuple(await self._figures()) if self._figures is not None else ()
        triggers = await self._triggers() if self._triggers is not None \
            else self._last_triggers
        return figures, triggers

    def span(self) -> float:
        """Seconds between the oldest and the newest observation in the window."""
        if len(self._observations) < 2:
            return 0.0
        return (self._observations[-1].at - self._observations[0].at).total_seconds()

    async def run(self) -> None:
        """Sample every ``interval`` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self.sample_once()
            await asyncio.sleep(max(0.0, self.interval - (loop.time() - started)))

    def start(self) -> None:
        """Run :meth:`run` in a background task (needs a running event loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="ops-lag-sampler")

    async def stop(self) -> None:
        """Cancel the background task and wait for it to end."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def wait_sampled(self, within: float) -> None:
        """Wait until at least one sample succeeded (raises TimeoutError)."""
        async with asyncio.timeout(within):
            await self._sampled.wait()


def watched_groups(settings: Settings, groups: Sequence[str] | None = None) -> tuple[str, ...]:
    """The groups to read: ``groups`` or STREAMS_OPS_GROUPS, else the pipeline's own
    consumer group; ``*`` among them means every consumer group (an empty tuple)."""
    chosen = tuple(groups) if groups else settings.ops.groups
    return () if "*" in chosen else chosen


@contextlib.asynccontextmanager
async def open_sampler(
    settings: Settings, *, groups: Sequence[str] | None = None, interval: float | None = None,
    window: float | None = None, clock: Callable[[], datetime] = utc_now,
) -> AsyncIterator[LagSampler]:
    """A sampler on the configured Kafka and database, closed on exit (not started).

    ``groups``, ``interval`` and ``window`` override the ops settings (``streams lag``
    uses a short window of its own).
    """
    from streams.db import async_engine
    from streams.ops.kafka import KafkaLagSource
    from streams.ops.store import read_pipeline_figures, read_trigger_figures

    ops, kafka = settings.ops, settings.kafka
    interval = interval or ops.interval
    window = window or ops.window
    source = KafkaLagSource(
        kafka.bootstrap, groups=watched_groups(settings, groups), topics=kafka.all_topics,
        clock=clock,
    )
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    schema = settings.database.schema
    rules = _trigger_rules(settings)
    sampler = LagSampler(
        source.observe, interval=interval, window=window,
        history=max(ops.history, window), dlq_topic=kafka.dlq,
        figures=lambda: read_pipeline_figures(engine, schema=schema),
        triggers=lambda: read_trigger_figures(engine, schema, rules),
        clock=clock,
    )
    try:
        yield sampler
    finally:
        await sampler.stop()
        await source.close()
        await engine.dispose()


def _trigger_rules(settings: Settings) -> RuleSet | None:
    """The rules the workers load, so that every rule is listed on /ops even before it
    fires; None (rules with rows only) when the file is invalid, which the worker
    itself refuses at start."""
    from streams.triggers.rules import RulesError, load_rules

    try:
        return load_rules(settings.triggers_file)
    except RulesError as exc:
        log.warning("ops: trigger rules not loaded (%s problems in %s)",
                    len(exc.problems), exc.source)
        return None
