"""``streams dlq list|replay`` and ``streams demo``."""

from __future__ import annotations

import asyncio
import base64
import random
import time
import uuid
from collections import Counter, deque
from pathlib import Path

import click
import orjson
from rich.console import Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from streams.cli_support import console, fail, settings_or_exit
from streams.settings import Settings

# --- dlq ----------------------------------------------------------------------------------


@click.group()
def dlq() -> None:
    """Dead letters: events that failed validation at the collector or in processing."""


async def _read_dead_letters(settings: Settings, origin: str | None, topic: str | None):
    from streams.events.dlq import read_dead_letter
    from streams.kafka import read_topic

    letters = []
    async for record in read_topic(settings, settings.kafka.dlq):
        letter = read_dead_letter(record.partition, record.offset, record.key, record.value,
                                  record.headers)
        if origin and letter.origin != origin:
            continue
        if topic and letter.original_topic != topic:
            continue
        letters.append(letter)
    return letters


def _letter_json(letter) -> dict:
    return {
        "partition": letter.partition, "offset": letter.offset, "key": letter.key,
        "origin": letter.origin, "reason": letter.reason, "field": letter.field,
        "original": {"topic": letter.original_topic, "partition": letter.original_partition,
                     "offset": letter.original_offset},
        "deadLetteredAt": letter.dead_lettered_at, "event": letter.event,
        **({"raw": letter.raw} if letter.event is None else {}),
    }


@dlq.command("list")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1),
              help="Show the most recent N dead letters.")
@click.option("--origin", type=click.Choice(["collector", "processing"]), default=None,
              help="Only dead letters from the collector or from processing.")
@click.option("--topic", default=None, help="Only those whose original topic is TOPIC.")
@click.option("--json", "as_json", is_flag=True,
              help="One JSON document per line (edit the events and feed them to "
                   "`dlq replay --fixed`).")
def dlq_list(limit: int, origin: str | None, topic: str | None, as_json: bool) -> None:
    """Show dead letters: where each came from and why it failed."""
    settings = settings_or_exit()
    try:
        letters = asyncio.run(_read_dead_letters(settings, origin, topic))
    except Exception as exc:  # noqa: BLE001 - one clear line for a connection failure
        fail(f"cannot read {settings.kafka.dlq} from Kafka at {settings.kafka.bootstrap}: "
              f"{exc}")
    # Most recent last: by when they were dead-lettered (partitions interleave).
    letters.sort(key=lambda lt: (lt.dead_lettered_at or "", lt.partition, lt.offset))
    shown = list(deque(letters, maxlen=limit))
    if as_json:
        for letter in shown:
            click.echo(orjson.dumps(_letter_json(letter)).decode())
        return
    table = Table(title=f"{settings.kafka.dlq}: {len(shown)} of {len(letters)} "
                        "dead letters", title_justify="left")
    for col in ("at", "dlq p/offset", "origin", "original", "key", "field", "reason"):
        table.add_column(col, overflow="fold")
    for letter in shown:
        original = letter.original_topic or "-"
        if letter.original_offset >= 0:
            original += f" [{letter.original_partition}]@{letter.original_offset}"
        table.add_row(letter.dead_lettered_at or "", f"{letter.partition}/{letter.offset}",
                      letter.origin, original, letter.key or "", letter.field or "",
                      letter.reason)
    console.print(table)
    reasons = Counter(letter.reason.split(":", 1)[0] for letter in letters)
    if reasons:
        console.print("most common: " + "; ".join(f"{r} (x{n})" for r, n in reasons.most_common(5)))


def _load_fixed(path: Path) -> dict[tuple[int, int], dict]:
    fixed: dict[tuple[int, int], dict] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise click.BadParameter(f"line {number}: not JSON: {exc}",
                                     param_hint="--fixed") from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("event"), dict) or not all(
                isinstance(doc.get(k), int) for k in ("partition", "offset")):
            raise click.BadParameter(
                f"line {number}: needs integer partition and offset and an event object "
                "(the form `streams dlq list --json` prints)", param_hint="--fixed")
        fixed[(doc["partition"], doc["offset"])] = doc["event"]
    return fixed


async def _replay(settings: Settings, letters, fixed, dry_run: bool):
    from streams.events.dlq import HEADER_REPLAYED
    from streams.events.time import utc_now
    from streams.ingest.replay import Replay, plan_replay
    from streams.kafka import EventWriter, OutgoingRecord

    topics = {k: settings.kafka.event_topic(k) for k in ("click", "view", "social", "identify")}
    now = utc_now()
    plans = []
    for letter in letters:
        fixed_event = fixed.get((letter.partition, letter.offset)) if fixed is not None else None
        plans.append((letter, plan_replay(letter, topics=topics, fixed_event=fixed_event, now=now)))
    replays = [p for _, p in plans if isinstance(p, Replay)]
    if replays and not dry_run:
        writer = EventWriter(settings)
        await writer.start()
        try:
            await writer.write([
                OutgoingRecord(r.topic, r.key, r.value, [(
                    HEADER_REPLAYED,
                    f"{r.dead_letter.partition}:{r.dead_letter.offset}".encode())])
                for r in replays])
        finally:
            await writer.stop()
    return plans


@dlq.command("replay")
@click.option("--fixed", "fixed_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="JSON lines as `dlq list --json` prints, with the events "
                                 "fixed; only these dead letters are replayed.")
@click.option("--origin", type=click.Choice(["collector", "processing"]), default=None)
@click.option("--topic", default=None, help="Only those whose original topic is TOPIC.")
@click.option("--dry-run", is_flag=True, help="Say what would be replayed; send nothing.")
def dlq_replay(fixed_path: Path | None, origin: str | None, topic: str | None,
               dry_run: bool) -> None:
    """Send dead letters that now pass validation back to their event topics.

    Without --fixed every dead letter is checked again (after a fix of the schemas or
    the code, the ones that pass go back); with --fixed, the operator's corrected events
    replace the stored ones. Events keep their messageId, so a second replay of the same
    dead letter is deduplicated downstream. Dead letters that still fail stay where they
    are and are listed with their reason.
    """
    from streams.ingest.replay import Replay

    settings = settings_or_exit()
    fixed = _load_fixed(fixed_path) if fixed_path else None
    try:
        letters = asyncio.run(_read_dead_letters(settings, origin, topic))
        if fixed is not None:
            letters = [lt for lt in letters if (lt.partition, lt.offset) in fixed]
            missing = set(fixed) - {(lt.partition, lt.offset) for lt in letters}
            if missing:
                fail("no dead letter at partition/offset " + ", ".join(
                    f"{p}/{o}" for p, o in sorted(missing)))
        plans = asyncio.run(_replay(settings, letters, fixed, dry_run))
    except click.exceptions.Exit:
        raise
    except Exception as exc:  # noqa: BLE001
        fail(f"replay failed against Kafka at {settings.kafka.bootstrap}: {exc}")
    table = Table(title=("would replay" if dry_run else "replay") + f": {len(plans)} dead letters",
                  title_justify="left")
    for col in ("dlq p/offset", "outcome", "to / why not"):
        table.add_column(col, overflow="fold")
    done = 0
    for letter, plan in plans:
        if isinstance(plan, Replay):
            done += 1
            table.add_row(f"{letter.partition}/{letter.offset}",
                          "[green]would replay[/green]" if dry_run else "[green]replayed[/green]",
                          plan.topic)
        else:
            table.add_row(f"{letter.partition}/{letter.offset}", "[yellow]still invalid[/yellow]",
                          plan.reason)
    console.print(table)
    console.print(f"{done} {'would be ' if dry_run else ''}replayed, "
                  f"{len(plans) - done} still invalid")


# --- demo ----------------------------------------------------------------------------------


class DemoStats:
    """Counters the demo's progress display shows."""

    def __init__(self) -> None:
        self.sent = 0
        self.accepted = 0
        self.rejected = 0
        self.failed_requests = 0
        self.last_error = ""
        self.by_source: Counter[str] = Counter()
        self.by_type: Counter[str] = Counter()
        self.recent: deque[tuple[float, int]] = deque(maxlen=50)

    def rate(self) -> float:
        if len(self.recent) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self.recent[0], self.recent[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def _demo_table(stats: DemoStats, people, url: str) -> Table:
    table = Table(title=f"demo traffic -> {url}", title_justify="left", expand=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    signed_in = sum(1 for p in people if p.signed_in)
    rows = [
        ("events sent", f"{stats.sent:,}"),
        ("accepted (200 after Kafka ack)", f"{stats.accepted:,}"),
        ("dead-lettered", f"{stats.rejected:,}"),
        ("failed requests", f"{stats.failed_requests:,}"),
        ("rate (events/s)", f"{stats.rate():,.0f}"),
        ("people signed in / app / watch", f"{signed_in} / {sum(p.has_app for p in people)} / "
                                           f"{sum(p.has_watch for p in people)} of {len(people)}"),
        ("by source", ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_source.items()))),
        ("by type", ", ".join(f"{k} {v:,}" for k, v in sorted(stats.by_type.items()))),
    ]
    if stats.last_error:
        rows.append(("last error", stats.last_error[:120]))
    for name, value in rows:
        table.add_row(name, value)
    return table


async def run_demo(
    settings: Settings, *, url: str, people_count: int, rate: float, duration: float,
    bad_share: float, seed: int | None, on_tick=None, stats: DemoStats | None = None,
) -> DemoStats:
    """Post simulated traffic to the collector at ``url`` for ``duration`` seconds.

    Events are grouped per source into /v1/batch requests with that source's write key,
    every 200 ms. Raises RuntimeError when a needed source has no write key or no collector
    answers at ``url``.
    """
    from aiohttp import ClientError, ClientSession, ClientTimeout

    from streams.events.time import utc_now
    from streams.ingest.simulate import broken_event, make_people, next_events

    keys: dict[str, str] = {}
    for key, source in settings.collector.write_keys.items():
        keys.setdefault(source, key)
    needed = ("web", "mobile", "smartwatch", "facebook", "instagram", "twitter", "linkedin")
    missing = [s for s in needed if s not in keys]
    if missing:
        raise RuntimeError("STREAMS_WRITE_KEYS has no key for source(s) " + ", ".join(missing))
    auth = {s: "Basic " + base64.b64encode(f"{k}:".encode()).decode() for s, k in keys.items()}
    rng = random.Random(seed)
    people = make_people(people_count, rng, uuid.uuid4().hex[:6])
    stats = stats or DemoStats()
    stats.people = people  # type: ignore[attr-defined]
    tick = 0.2
    started = time.monotonic()
    owed = 0.0

    async with ClientSession(timeout=ClientTimeout(total=30)) as session:
        try:
            async with session.get(f"{url}/healthz") as resp:
                if resp.status != 200:
                    raise RuntimeError(f"{url}/healthz answered {resp.status}")
        except (TimeoutError, ClientError, OSError) as exc:
            raise RuntimeError(f"no collector answers at {url} ({type(exc).__name__}); "
                               "start one with `streams serve`") from exc

        async def post(source: str, events: list[dict]) -> None:
            body = orjson.dumps({"batch": events, "sentAt": events[-1].get("sentAt")})
            try:
                async with session.post(f"{url}/v1/batch", data=body, headers={
                        "Authorization": auth[source], "Content-Type": "application/json"}) as resp:
                    answer = await resp.read()
                    if resp.status == 200:
                        doc = orjson.loads(answer)
                        stats.accepted += doc.get("accepted", 0)
                        stats.rejected += doc.get("deadLettered", 0)
                    else:
                        stats.failed_requests += 1
                        text = answer[:200].decode("utf-8", "replace")
                        stats.last_error = f"{resp.status}: {text}"
            except (TimeoutError, ClientError, OSError) as exc:
                stats.failed_requests += 1
                stats.last_error = f"{type(exc).__name__}: {exc}"

        while (elapsed := time.monotonic() - started) < duration:
            owed += rate * tick
            batch: dict[str, list[dict]] = {}
            now = utc_now()
            while owed >= 1:
                if bad_share and rng.random() < bad_share:
                    produced = [broken_event(rng, now)]
                else:
                    produced = next_events(rng.choice(people), rng, now)
                for sim in produced:
                    batch.setdefault(sim.source, []).append(sim.event)
                    stats.by_source[sim.source] += 1
                    stats.by_type[str(sim.event.get("type"))] += 1
                owed -= len(produced)
            sends = []
            for source, events in batch.items():
                stats.sent += len(events)
                for start in range(0, len(events), 100):
                    sends.append(post(source, events[start:start + 100]))
            await asyncio.gather(*sends)
            stats.recent.append((time.monotonic(), stats.accepted + stats.rejected))
            if on_tick:
                on_tick(elapsed)
            spare = tick - ((time.monotonic() - started) - elapsed)
            if spare > 0:
                await asyncio.sleep(spare)
    return stats


@click.command()
@click.option("--people", "people_count", default=200, show_default=True,
              type=click.IntRange(1, 1_000_000), help="Simulated people.")
@click.option("--rate", default=50.0, show_default=True, type=click.FloatRange(0.1, 100_000),
              help="Events per second.")
@click.option("--duration", default=60.0, show_default=True, type=click.FloatRange(1, 86_400),
              help="Seconds to run.")
@click.option("--url", default=None, help="Collector base URL (default: STREAMS_HTTP_HOST/PORT).")
@click.option("--bad-share", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Share of deliberately invalid events (they go to the DLQ).")
@click.option("--seed", default=None, type=int, help="Random seed for a repeatable run.")
def demo(people_count: int, rate: float, duration: float, url: str | None, bad_share: float,
         seed: int | None) -> None:
    """Realistic simulated traffic through the collector: anonymous web browsing, sign-ins,
    the phone app and the watch, likes and shares on social channels, preferences and
    consent. Needs `streams serve` running."""
    settings = settings_or_exit()
    url = (url or settings.http.url).rstrip("/")
    stats = DemoStats()
    progress = Progress(TextColumn("[bold]demo"), BarColumn(),
                        TextColumn("{task.percentage:>3.0f}%"), TimeElapsedColumn(),
                        TextColumn("left"), TimeRemainingColumn())
    task = progress.add_task("demo", total=duration)

    def render():
        return Group(progress, _demo_table(stats, getattr(stats, "people", []), url))

    try:
        with Live(render(), console=console, refresh_per_second=4) as live:

            def on_tick(elapsed: float) -> None:
                progress.update(task, completed=min(elapsed, duration))
                live.update(render())

            asyncio.run(run_demo(settings, url=url, people_count=people_count, rate=rate,
                                 duration=duration, bad_share=bad_share, seed=seed,
                                 on_tick=on_tick, stats=stats))
            progress.update(task, completed=duration)
            live.update(render())
    except RuntimeError as exc:
        console.print()
        fail(str(exc))
    except KeyboardInterrupt:
        console.print("stopped")
    if stats.sent and stats.accepted == 0 and stats.failed_requests:
        fail(f"no event was accepted by {url}: {stats.last_error} (is `streams serve` running?)")
