"""CLI of the profiles domain: ``streams profile get``, ``streams rebuild``."""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime

import click
import orjson
from rich.console import Console
from rich.progress import Progress

from streams.cli_support import settings_or_exit, with_local_secrets

console = Console(width=None if sys.stdout.isatty() else 160)


@click.group("profile")
def profile() -> None:
    """Unified profiles."""


@profile.command("get")
@click.argument("identifier")
def profile_get(identifier: str) -> None:
    """Print the profile holding IDENTIFIER (TYPE:VALUE, e.g. email:ann@example.com)."""
    from streams.db import async_engine
    from streams.profiles.store import ProfileStore
    from streams.profiles.views import parse_identifier, render

    try:
        key = parse_identifier(identifier)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="IDENTIFIER") from None
    settings = settings_or_exit()

    async def run():
        engine = async_engine(settings, pool_size=1, max_overflow=0)
        try:
            store = ProfileStore.for_settings(settings, engine)
            return await store.find_by_identifier(key)
        finally:
            await engine.dispose()

    found = asyncio.run(run())
    if found is None:
        console.print(f"[yellow]no profile holds {identifier}[/yellow]")
        sys.exit(1)
    click.echo(orjson.dumps(render(*found, datetime.now(UTC)), option=orjson.OPT_INDENT_2))


@click.command("rebuild")
@click.option("--check", is_flag=True, help="Exit with status 1 when anything differs.")
def rebuild_cmd(check: bool) -> None:
    """Rebuild every profile from the topics into a fresh schema; report differences
    from the live profiles."""
    from streams.profiles.rebuild import rebuild

    # The forget key: the rebuilt schema must know who was forgotten.
    settings, _ = with_local_secrets(settings_or_exit(), tokens=False)
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("reading topics", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        report = asyncio.run(rebuild(settings, progress))
    console.print(f"rebuilt into schema [bold]{report.schema}[/bold] (dropped once compared): "
                  f"{report.records} "
                  f"records read, {report.invalid} invalid; {report.rebuilt} profiles rebuilt, "
                  f"{report.live} live")
    if report.identical:
        console.print("[green]no differences[/green]")
        return
    for pid in report.only_live[:50]:
        console.print(f"only live:     {pid}")
    for pid in report.only_rebuilt[:50]:
        console.print(f"only rebuilt:  {pid}")
    for pid, fields in list(report.different.items())[:50]:
        console.print(f"different:     {pid}: {', '.join(fields)}")
    console.print(f"[yellow]{len(report.only_live)} only live, {len(report.only_rebuilt)} only "
                  f"rebuilt, {len(report.different)} different[/yellow]")
    if check:
        sys.exit(1)
