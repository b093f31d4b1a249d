"""``streams triggers check|list|stats`` and ``streams messages tail``.

The printing is done by small functions of plain values (a rule set, stats dicts, a
message document), so the unit tests reach it without Kafka or PostgreSQL.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

import click
import orjson
from rich import box
from rich.markup import escape
from rich.table import Table

from streams.cli_support import console, err_console, fail, settings_or_exit
from streams.settings import Settings
from streams.triggers.rules import RulesError, RuleSet, load_rules

# --- triggers ------------------------------------------------------------------------


@click.group()
def triggers() -> None:
    """Trigger rules: check a rules file, list the loaded rules, per-rule stats."""


def _print_problems(error: RulesError) -> None:
    count = len(error.problems)
    err_console.print(f"[red]error:[/red] {escape(error.source)}: {count} "
                      f"problem{'s' if count != 1 else ''}", highlight=False)
    for problem in error.problems:
        err_console.print(f"  - {escape(problem)}", highlight=False)


def summary(rules: RuleSet) -> str:
    """One line about a valid rule set: how many rules, which are on, the global limits."""
    on = [r.name for r in rules.enabled()]
    off = sorted(set(rules.rules) - set(on))
    q = rules.quiet_hours
    text = (f"{len(rules.rules)} rule{'s' if len(rules.rules) != 1 else ''}, "
            f"{len(on)} enabled ({', '.join(on) or 'none'})")
    if off:
        text += f", {len(off)} disabled ({', '.join(off)})"
    return (text + f"; quiet hours {q.start:%H:%M}-{q.end:%H:%M}, caps "
            f"{rules.caps.per_day}/day {rules.caps.per_week}/week, "
            f"default locale {rules.default_locale}, time zone {rules.default_timezone}")


@triggers.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
def check_cmd(file: Path) -> None:
    """Validate the rules FILE without starting anything.

    Exits 0 with a summary when it is valid, 2 listing every problem (each naming the
    rule and the field) when it is not.
    """
    try:
        rules = load_rules(file)
    except RulesError as exc:
        _print_problems(exc)
        sys.exit(2)
    console.print(f"{escape(str(file))}: ok, {escape(summary(rules))}", highlight=False)


def configured_rules(settings: Settings) -> RuleSet:
    """The rules the worker loads: STREAMS_TRIGGERS_FILE, else the built-in file.
    Raises RulesError."""
    return load_rules(settings.triggers_file)


def rules_json(rules: RuleSet) -> dict[str, Any]:
    """The loaded rules as JSON: where from, the global settings, one entry per rule."""
    return {"source": rules.source, "default_locale": rules.default_locale,
            "default_timezone": rules.default_timezone,
            "quiet_hours": {"start": f"{rules.quiet_hours.start:%H:%M}",
                            "end": f"{rules.quiet_hours.end:%H:%M}"},
            "caps": rules.caps.model_dump(), "rules": rules.describe()}


def rules_table(rules: RuleSet) -> Table:
    """The rules as a table: what fires, when, where to, and the control group."""
    table = Table(title=f"{len(rules.rules)} rules from {escape(rules.source)}",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for name in ("rule", "kind", "on", "template", "delay", "expires", "send at",
                 "channels", "control", "goal"):
        table.add_column(name, justify="right" if name in ("delay", "expires", "control")
                         else "left")
    for row in rules.describe():
        table.add_row(
            escape(row["name"]), row["kind"], "yes" if row["enabled"] else "[yellow]no[/yellow]",
            escape(row["template"]), row["delay"], row["expires_after"], row["send_at"],
            ", ".join(row["channels"]), f"{row['control_share']:.0%}",
            escape(", ".join(row["goal"]) or "-"))
    return table


@triggers.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the rules as JSON.")
def list_cmd(as_json: bool) -> None:
    """The rules the worker loads: STREAMS_TRIGGERS_FILE, else the built-in file."""
    settings = settings_or_exit()
    try:
        rules = configured_rules(settings)
    except RulesError as exc:
        _print_problems(exc)
        sys.exit(2)
    if as_json:
        sys.stdout.write(orjson.dumps(rules_json(rules), option=orjson.OPT_INDENT_2).decode()
                         + "\n")
    else:
        console.print(rules_table(rules))
        console.print(escape(summary(rules)), highlight=False)


def _reasons(counts: dict[str, int]) -> str:
    if not counts:
        return "0"
    parts = ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items(),
                                                              key=lambda kv: (-kv[1], kv[0])))
    return f"{sum(counts.values())} ({parts})"


def _rate(converted: int, out_of: int) -> str:
    return f"{converted}" + (f" ({converted / out_of:.1%})" if out_of else "")


def stats_table(stats: list[dict[str, Any]]) -> Table:
    """Per-rule stats (``RuleStats.to_json()`` dicts) as a table; lift in percentage
    points (conversion rate of the sent minus that of the held out)."""
    table = Table(box=box.SIMPLE_HEAD, title="messages by rule", title_justify="left")
    for name in ("rule", "scheduled", "pending", "sent", "held out", "cancelled",
                 "suppressed", "converted (sent)", "converted (held out)", "lift"):
        table.add_column(name, justify="left" if name in ("rule", "cancelled", "suppressed")
                         else "right")
    for s in stats:
        lift = "-" if s["lift"] is None else f"{s['lift'] * 100:+.1f} pts"
        table.add_row(escape(s["rule"]), str(s["scheduled"]), str(s["pending"]), str(s["sent"]),
                      str(s["heldOut"]), escape(_reasons(s["cancelled"])),
                      escape(_reasons(s["suppressed"])),
                      _rate(s["convertedSent"], s["sent"]),
                      _rate(s["convertedHeldOut"], s["heldOut"]), lift)
    return table


def first_line(exc: BaseException) -> str:
    """The driver's own first line about a database failure (SQLAlchemy's text would add
    the statement; neither carries the URL, so the password never shows)."""
    orig = getattr(exc, "orig", None) or exc
    lines = str(orig).strip().splitlines()
    return lines[0] if lines else type(orig).__name__


async def _read_stats(settings: Settings, rules: RuleSet | None) -> list[dict[str, Any]]:
    from streams.db import async_engine
    from streams.triggers.reads import read_rule_stats

    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        stats = await read_rule_stats(engine, settings.profiles_schema or None, rules)
    finally:
        await engine.dispose()
    return [s.to_json() for s in stats]


@triggers.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the stats as JSON.")
def stats_cmd(as_json: bool) -> None:
    """Per rule: scheduled, pending, sent, held out (the control group), cancelled and
    suppressed by reason, conversions among the sent and the held out, and the lift.
    Read from the database (STREAMS_DATABASE_URL, STREAMS_PROFILES_SCHEMA)."""
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    from streams.triggers.reads import ScheduleMissing

    settings = settings_or_exit()
    try:
        rules: RuleSet | None = configured_rules(settings)
    except RulesError as exc:
        # The stats are still worth reading; only rules with rows are listed then.
        err_console.print(f"[yellow]warning:[/yellow] {escape(str(exc))}", highlight=False)
        rules = None
    where = settings.redacted_database_url() + (
        f" (schema {settings.profiles_schema})" if settings.profiles_schema else "")
    try:
        stats = asyncio.run(_read_stats(settings, rules))
    except ScheduleMissing as exc:
        fail(f"{exc} in {where}; run `streams db upgrade`")
    except (DBAPIError, SQLAlchemyError, OSError) as exc:
        fail(f"cannot read the schedule from {where}: {escape(first_line(exc))}")
    if as_json:
        sys.stdout.write(orjson.dumps({"rules": stats}, option=orjson.OPT_INDENT_2).decode()
                         + "\n")
        return
    console.print(stats_table(stats))
    if not any(s["scheduled"] for s in stats):
        console.print("nothing scheduled yet", highlight=False)


# --- messages ------------------------------------------------------------------------


@click.group()
def messages() -> None:
    """The personalized messages the trigger stage emits (messages.personalized)."""


def _clock(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 19:
        return "-".ljust(20)
    return f"{value[:10]} {value[11:19]}Z"


def message_line(doc: dict[str, Any]) -> str:
    """One line for a message: emitted time (UTC), channel, destination type, rule,
    profile id prefix and template. The destination's value (an address, a device id)
    is left out: it is the person's data, and ``--json`` shows it when wanted."""
    destination = doc.get("destination") if isinstance(doc.get("destination"), dict) else {}
    profile = str(doc.get("profileId") or "-")
    return "  ".join((
        _clock(doc.get("emittedAt")), str(doc.get("channel") or "-").ljust(9),
        str(destination.get("type") or "-").ljust(16), str(doc.get("rule") or "-").ljust(20),
        profile[:8], str(doc.get("template") or "-")))


def _write(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


async def _tail(settings: Settings, from_beginning: bool, limit: int | None, as_json: bool,
                shown: list[int]) -> None:
    from streams.triggers.follow import follow_topic

    topic = settings.topic(settings.topic_messages)
    task = asyncio.current_task()
    loop = asyncio.get_running_loop()
    if task is not None:
        loop.add_signal_handler(signal.SIGTERM, task.cancel)  # stop as Ctrl-C does

    def waiting() -> None:
        err_console.print(f"waiting for the partitions of {topic}...", highlight=False)

    async with follow_topic(settings, topic, from_beginning=from_beginning,
                            on_waiting=waiting) as (partitions, records):
        err_console.print(
            f"following {escape(topic)} ({partitions} partitions) "
            f"{'from the beginning' if from_beginning else 'from now'}"
            f"{f', until {limit} messages' if limit else ''}; Ctrl-C stops", highlight=False)
        if limit == 0:
            return
        async for record in records:
            try:
                doc = orjson.loads(record.value) if record.value is not None else None
            except orjson.JSONDecodeError:
                doc = None
            if not isinstance(doc, dict):
                err_console.print(f"[yellow]skipped[/yellow] partition {record.partition} "
                                  f"offset {record.offset}: not a JSON object", highlight=False)
                continue
            _write(orjson.dumps(doc).decode() if as_json else message_line(doc))
            shown[0] += 1
            if limit is not None and shown[0] >= limit:
                return


@messages.command("tail")
@click.option("--from-beginning", is_flag=True,
              help="Start at the oldest message kept, not at the ones produced from now on.")
@click.option("--max", "limit", type=click.IntRange(0), default=None,
              help="Stop after N messages.")
@click.option("--json", "as_json", is_flag=True,
              help="Print each message document as one JSON line.")
def tail_cmd(from_beginning: bool, limit: int | None, as_json: bool) -> None:
    """Follow messages.personalized: one line per message (time, channel, destination
    type, rule, profile id prefix, template), or each document as JSON. Reads without a
    consumer group, so it commits nothing. Ctrl-C stops."""
    from aiokafka.errors import KafkaError

    from streams.triggers.follow import TopicMissing

    settings = settings_or_exit()
    shown = [0]
    try:
        asyncio.run(_tail(settings, from_beginning, limit, as_json, shown))
    except (KeyboardInterrupt, asyncio.CancelledError):
        err_console.print(f"stopped after {shown[0]} message{'s' if shown[0] != 1 else ''}",
                          highlight=False)
    except BrokenPipeError:
        # The reader went away (`| head`): not an error; keep Python's exit flush quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except TopicMissing as exc:
        fail(f"topic {exc} does not exist yet: a worker creates it (`streams worker`, "
             "`streams up`)")
    except KafkaError as exc:
        fail(f"cannot read {settings.topic(settings.topic_messages)} from Kafka at "
             f"{settings.kafka_bootstrap}: {type(exc).__name__}: {exc}")
