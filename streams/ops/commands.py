"""``streams lag``: consumer-group lag as a terminal table, like
``kafka-consumer-groups --describe``, with lag in seconds and the status column."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime
from typing import Any

import click
import orjson
from rich import box
from rich.console import Console
from rich.table import Table

from streams.cli_support import console, err_console, fail, settings_or_exit

COLUMNS = ("GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
           "LAG-SECONDS", "STATUS", "CONSUMER-ID", "HOST", "CLIENT-ID")
_COLOURS = {"OK": "green", "WARNING": "yellow", "REWIND": "magenta", "STALL": "dark_orange",
            "STOP": "red"}


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def describe_rows(doc: dict[str, Any]) -> list[list[str]]:
    """One row per group and partition of a report (``LagReport.as_dict()``), in the
    columns of :data:`COLUMNS`; missing values are ``-`` as Kafka's tool prints them."""
    rows = []
    for g in doc["groups"]:
        for p in g["partitions"]:
            seconds = p["lag_seconds"]
            rows.append([
                g["group"], p["topic"], str(p["partition"]), _dash(p["committed"]),
                _dash(p["end"]), _dash(p["lag"]),
                "-" if seconds is None else f"{seconds:.1f}", p["status"],
                _dash(p["consumer_id"]), _dash(p["host"]), _dash(p["client_id"]),
            ])
    return rows


def render(doc: dict[str, Any], console: Console) -> None:
    """Print a group summary, then the per-partition table."""
    now = datetime.now(UTC)
    if doc.get("error"):
        console.print(f"[yellow]warning:[/yellow] {doc['error']}")
    if not doc["groups"]:
        console.print("no consumer groups found")
        return
    for g in doc["groups"]:
        since = datetime.fromisoformat(g["status_since"].replace("Z", "+00:00"))
        colour = _COLOURS.get(g["status"], "white")
        age = "-" if g["lag_seconds"] is None else f"{g['lag_seconds']:.1f}s"
        console.print(
            f"[bold]{g['group']}[/bold]  [{colour}]{g['status']}[/{colour}] for "
            f"{(now - since).total_seconds():.0f}s  state {g['state']}, {g['members']} members, "
            f"lag {g['lag']} messages, oldest unconsumed {age}",
            highlight=False,
        )
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for name in COLUMNS:
        table.add_column(name, justify="right" if name in (
            "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG", "LAG-SECONDS") else "left",
            no_wrap=True)
    for row in describe_rows(doc):
        colour = _COLOURS.get(row[7], "white")
        row[7] = f"[{colour}]{row[7]}[/{colour}]"
        table.add_row(*row)
    console.print(table)
    figures = [
        f"{f['label'].lower()} {f['value']}" if f["value"] is not None
        else f"{f['label'].lower()} n/a"
        for f in doc.get("figures", [])
    ]
    dlq = doc.get("dlq_rate")
    figures.insert(0, f"dead letters {'-' if dlq is None else f'{dlq:.1f}/s'}")
    console.print("pipeline: " + ", ".join(figures), highlight=False)


async def sample_report(settings, groups: tuple[str, ...], seconds: float,
                        interval: float) -> dict[str, Any]:
    """Watch the cluster for ``seconds`` (the status window) and return the report.

    Raises RuntimeError naming the problem when Kafka cannot be read at all.
    """
    from streams.ops.sampler import open_sampler

    async with open_sampler(settings, groups=groups or None, interval=interval,
                            window=seconds) as sampler:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds + max(30.0, 3 * interval)
        await sampler.sample_once()
        while sampler.span() < seconds and loop.time() < deadline:
            await asyncio.sleep(interval)
            await sampler.sample_once()
        if sampler.samples_taken == 0:
            raise RuntimeError(sampler.report.error or "no sample taken")
        return sampler.report.as_dict()


async def fetch_report(url: str, token: str | None) -> dict[str, Any]:
    """The report of a running ``streams serve`` (raises RuntimeError on failure)."""
    import aiohttp

    headers = {"Authorization": f"Bearer {token}"} if token else {}
    target = url.rstrip("/") + "/ops/lag.json"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
            async with session.get(target, headers=headers) as response:
                if response.status == 401:
                    raise RuntimeError(f"{target} needs STREAMS_OPS_TOKEN (answered 401)")
                if response.status != 200:
                    raise RuntimeError(f"{target} answered HTTP {response.status}")
                return orjson.loads(await response.read())
    except aiohttp.ClientError as exc:
        raise RuntimeError(f"cannot reach {target}: {exc}") from exc


@click.command("lag")
@click.option("--group", "-g", "groups", multiple=True,
              help="Group to show (repeatable; '*' for every group). "
                   "Default: STREAMS_OPS_GROUPS, else STREAMS_CONSUMER_GROUP.")
@click.option("--seconds", type=click.FloatRange(min=0.5), default=3.0, show_default=True,
              help="How long to watch: the window the status is judged over.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=1.0, show_default=True,
              help="Seconds between samples while watching.")
@click.option("--url", default=None,
              help="Read the report of a running `streams serve` at this base URL instead "
                   "(its full window); sends STREAMS_OPS_TOKEN when set.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--check", is_flag=True, help="Exit with 3 when any group is not OK.")
def lag(groups: tuple[str, ...], seconds: float, interval: float, url: str | None,
        as_json: bool, check: bool) -> None:
    """Consumer-group lag per partition, with lag in seconds and a Burrow-style status.

    Watches the cluster for --seconds (sampling every --interval) so that the status can
    be judged; STOP needs the group to stay still for that whole window.
    """
    settings = settings_or_exit()
    if seconds < 2 * interval:
        fail(f"--seconds ({seconds}) must be at least twice --interval ({interval})", code=2)
    try:
        if url:
            doc = asyncio.run(fetch_report(url, settings.ops.token_value()))
        else:
            with err_console.status(f"watching consumer groups for {seconds:g}s..."):
                doc = asyncio.run(sample_report(settings, groups, seconds, interval))
    except RuntimeError as exc:
        fail(str(exc))
    if as_json:
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        render(doc, console)
    if check and any(g["status"] != "OK" for g in doc["groups"]):
        sys.exit(3)
