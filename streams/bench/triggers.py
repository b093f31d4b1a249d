"""``streams bench triggers``: the trigger stage, in one run.

1. End to end: the pipeline bench's fold (``streams worker`` over the same produced
   events, same settings) with ``STREAMS_TRIGGERS_ENABLED`` false, then true, each into
   a fresh schema; events/s of each and the ratio. The events are stamped in the recent
   past, from people whose local time is midday, so that the built-in welcome rule
   falls due during the run and is emitted (not held by quiet hours): the stage plans
   and emits while the fold runs. The scheduled rows are counted afterwards, and the
   time the stage needs after the fold to empty the change feed and the due messages.
2. and 3. The due-loop alone (``streams.bench.trigger_due``): messages due evenly over a
   minute (delay past due, p50/p99/max) and all at once (emitted per second), against a
   raw aiokafka producer sending the same messages.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import click
from rich.table import Table
from sqlalchemy import text

from streams.bench.pipeline import (
    bench_settings,
    console,
    drop_bench,
    end_total,
    iter_events,
    produce,
    run_until_caught_up,
)
from streams.bench.trigger_due import DueLoopResult, due_loop, schedule_sql
from streams.infra.procs import stop_session
from streams.settings import Settings, load_settings

TARGET_RATIO = 0.90
TARGET_P99_SECONDS = 1.0
TARGET_BURST_RATE = 10_000
# ``--quick``: counts small enough for CI, large enough for a few offset commits.
QUICK = {"people": 5000, "messages": 500, "spread_seconds": 5.0}


@dataclass
class EndToEndResult:
    """Figures of the end-to-end half."""

    events: int
    people: int
    off_rate: float = 0.0
    on_rate: float = 0.0
    statuses: dict[str, int] = field(default_factory=dict)  # rows by status, rules on
    drain_seconds: float | None = None  # after the fold caught up, until the stage had
    zone: str = ""
    topic_prefix: str = ""  # the bench's topics; its schemas are bench_<the same tag>*

    @property
    def ratio(self) -> float:
        """Events/s with the rules on over events/s with them off."""
        if not (math.isfinite(self.on_rate) and math.isfinite(self.off_rate)):
            return float("nan")
        return self.on_rate / self.off_rate if self.off_rate else 0.0


def midday_zone(now: datetime) -> str:
    """A fixed-offset IANA zone in which ``now`` is about 13:00 (``Etc/GMT-3`` is UTC+3).
    Pure."""
    offset = (13 - now.astimezone(UTC).hour) % 24
    if offset > 14:
        offset -= 24
    return "Etc/UTC" if offset == 0 else f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"


async def _backlog(engine, settings: Settings) -> int:
    """Changed profiles not yet planned plus messages due and not yet decided."""
    from streams.profiles import feed

    S, set_path = schedule_sql(settings)
    async with engine.begin() as conn:
        await conn.execute(set_path)
        due = (await conn.execute(text(
            f"SELECT count(*) FROM {S} WHERE {S.status} = 'pending' AND {S.due_at} <= now()"
        ))).scalar_one()
        return int(due) + await feed.pending_changes(conn)


async def _statuses(engine, settings: Settings) -> dict[str, int]:
    S, set_path = schedule_sql(settings)
    async with engine.begin() as conn:
        await conn.execute(set_path)
        return {status: int(n) for status, n in await conn.execute(text(
            f"SELECT {S.status}, count(*) FROM {S} GROUP BY 1"))}


async def end_to_end(settings: Settings, engine, people: int, per_profile: int,
                     schemas: list[str], say=console.print, drain_limit: float = 600
                     ) -> EndToEndResult:
    """The fold with the trigger stage off, then on (see the module). Appends the
    schemas it creates to ``schemas`` (for the caller to drop). Raises ClickException
    when a worker exits or does not catch up. Blocks."""
    from streams.profiles.store import create_schema

    total = people * per_profile
    zone = midday_zone(datetime.now(UTC))
    result = EndToEndResult(events=total, people=people, zone=zone,
                            topic_prefix=settings.topic_prefix)
    # 10 ms apart, ending a minute ago: every welcome (5 s delay, 1 day expiry) is due.
    start = time.time() - total * 0.01 - 60
    say(f"producing {total:,} events for {people:,} people...")
    await produce(settings, iter_events(people, total, start=start, timezone=zone))
    ends = await end_total(settings)
    tag = settings.profiles_schema.removeprefix("bench_")
    argv = [sys.executable, "-m", "streams", "worker"]
    for enabled in (False, True):
        name = "on" if enabled else "off"
        run = settings.model_copy(update={
            "triggers_enabled": enabled, "consumer_group": f"bench-trig-{name}-{tag}",
            "profiles_schema": f"bench_{tag}_{name}"})
        await create_schema(engine, run.profiles_schema)
        schemas.append(run.profiles_schema)
        say(f"profile stage, triggers {name}...")
        rate, worker = await run_until_caught_up(run, argv, ends)
        try:
            if enabled:
                result.on_rate = rate
                caught_up = time.monotonic()
                while time.monotonic() - caught_up < drain_limit:
                    if not await _backlog(engine, run):
                        result.drain_seconds = time.monotonic() - caught_up
                        break
                    await asyncio.sleep(0.5)
                result.statuses = await _statuses(engine, run)
            else:
                result.off_rate = rate
        finally:
            stop_session(worker)
    return result


async def run_bench(base: Settings, *, people: int, per_profile: int, messages: int,
                    spread_seconds: float, emitters: int, keep: bool = False,
                    say=console.print) -> tuple[EndToEndResult, DueLoopResult]:
    """Both halves on throwaway topics and schemas (removed at the end unless ``keep``)."""
    from streams.db import async_engine
    from streams.profiles.store import create_schema
    from streams.topics import ensure_topics

    settings = bench_settings(base)
    engine = async_engine(settings, pool_size=2, max_overflow=0)
    schemas: list[str] = []
    try:
        await ensure_topics(settings)
        e2e = await end_to_end(settings, engine, people, per_profile, schemas, say)
        await create_schema(engine, settings.profiles_schema)
        schemas.append(settings.profiles_schema)
        due = await due_loop(settings, engine, messages=messages, spread_seconds=spread_seconds,
                             emitters=emitters, say=say)
        return e2e, due
    finally:
        if not keep:
            await drop_bench(settings, engine, schemas,
                             extra_topics=(settings.topic("bench.raw"),))
        await engine.dispose()


def _met(ok: bool) -> str:
    return "yes" if ok else "NO"


def _rate(value: float) -> str:
    # A run too short to see two offset commits has no measurable rate.
    return f"{value:,.0f} ev/s" if math.isfinite(value) else "n/a (too few events)"


def report(e2e: EndToEndResult, due: DueLoopResult, settings: Settings) -> Table:
    """The figures as a rich table."""
    table = Table(title=f"bench triggers ({e2e.events:,} events for {e2e.people:,} people, "
                        f"4 partitions, {settings.fold_processes} fold processes; "
                        f"{due.messages:,} messages per due-loop phase, {due.emitters} "
                        f"emitter process(es) of {due.lanes} emit lane(s), batch {due.batch})",
                  title_justify="left")
    for col in ("measure", "value", "baseline", "target", "met"):
        table.add_column(col)
    sched = sum(e2e.statuses.values())
    table.add_row("end to end, triggers off", _rate(e2e.off_rate), "", "", "")
    table.add_row("end to end, triggers on (built-in rules)", _rate(e2e.on_rate),
                  f"{_rate(e2e.off_rate)} (off)", "", "")
    ratio = f"{e2e.ratio:.1%}" if math.isfinite(e2e.ratio) else "n/a"
    table.add_row("ratio on / off", ratio, "", f">= {TARGET_RATIO:.0%}",
                  _met(e2e.ratio >= TARGET_RATIO))
    table.add_row("  rows scheduled with triggers on (by status)",
                  f"{sched:,}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(e2e.statuses.items())),
                  "", "> 0", _met(sched > 0))
    drain = "not within the limit" if e2e.drain_seconds is None else f"{e2e.drain_seconds:.1f} s"
    table.add_row("  trigger stage caught up, after the fold", drain, "", "", "")
    table.add_row(f"due evenly over {due.spread_seconds:.0f} s: delay past due p50 / p99 / max",
                  f"{due.delay_p50 * 1000:,.0f} / {due.delay_p99 * 1000:,.0f} / "
                  f"{due.delay_max * 1000:,.0f} ms ({due.spread_sent:,} sent)",
                  f"poll pause {settings.triggers_poll_seconds * 1000:.0f} ms",
                  f"p99 < {TARGET_P99_SECONDS * 1000:.0f} ms",
                  _met(due.delay_p99 < TARGET_P99_SECONDS))
    table.add_row("  the same from the rows' sent_at: p99", f"{due.sent_at_p99 * 1000:,.0f} ms",
                  "", "", "")
    table.add_row("all due at once: emitted per second",
                  f"{due.burst_rate:,.0f} msg/s ({due.burst_sent:,} in {due.burst_seconds:.1f} s)",
                  f"raw aiokafka producer, same {due.message_bytes:,.0f} B messages: "
                  f"{due.raw_rate:,.0f} msg/s", f">= {TARGET_BURST_RATE:,}/s",
                  _met(due.burst_rate >= TARGET_BURST_RATE))
    table.add_row("  the same, due -> the last message's record timestamp",
                  f"{due.burst_record_seconds:.1f} s", "", "", "")
    table.add_row("  emitter CPU per message (spread / burst)",
                  " / ".join(f"{due.emitter_cpu.get(k, 0) / max(n, 1) * 1e6:,.0f} µs"
                             for k, n in (("spread", due.spread_sent),
                                          ("burst", due.burst_sent))), "", "", "")
    table.add_row("  PostgreSQL + broker CPU per message (spread / burst; all their clients)",
                  " / ".join(f"{due.server_cpu.get(k, 0) / max(n, 1) * 1e6:,.0f} µs"
                             for k, n in (("spread", due.spread_sent),
                                          ("burst", due.burst_sent))), "", "", "")
    table.add_row("    of which the emitters' own PostgreSQL backends (spread / burst)",
                  " / ".join(f"{due.backend_cpu.get(k, 0) / max(n, 1) * 1e6:,.0f} µs"
                             for k, n in (("spread", due.spread_sent),
                                          ("burst", due.burst_sent))), "", "", "")
    return table


@click.command("triggers")
@click.option("--profiles", "people", default=100_000, show_default=True,
              help="People in the end-to-end runs.")
@click.option("--events-per-profile", default=2, show_default=True)
@click.option("--messages", default=100_000, show_default=True,
              help="Messages in each due-loop phase.")
@click.option("--spread-seconds", default=60.0, show_default=True,
              help="The window the spread phase's messages fall due over.")
@click.option("--emitters", default=2, show_default=True, type=click.IntRange(1, 16),
              help="Emitter processes (TriggerStage.run each) in the due-loop phases.")
@click.option("--quick", is_flag=True,
              help="Small counts (5,000 people, 500 messages over 5 s) for CI.")
@click.option("--keep", is_flag=True, help="Keep the bench schemas and topics.")
def triggers(people: int, events_per_profile: int, messages: int, spread_seconds: float,
             emitters: int, quick: bool, keep: bool) -> None:
    """Trigger stage: end-to-end events/s with the rules on vs off; delay past due of
    messages due over a minute; messages emitted per second when all are due at once."""
    if quick:
        people, messages, spread_seconds = (QUICK["people"], QUICK["messages"],
                                            QUICK["spread_seconds"])
    settings = load_settings()
    e2e, due = asyncio.run(run_bench(settings, people=people, per_profile=events_per_profile,
                                     messages=messages, spread_seconds=spread_seconds,
                                     emitters=emitters, keep=keep))
    console.print(report(e2e, due, settings))
    if due.late_start > 0:
        console.print(f"[yellow]the spread phase's due times were set {due.late_start:.1f} s "
                      "after the first one: its first delays include that[/yellow]")
