"""The ``streams`` command line."""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
from rich.table import Table

from streams.cli_support import (
    SecretSafeGroup,
    console,
    err_console,
    fail,
    print_token_use,
    settings_or_exit,
    with_local_secrets,
)
from streams.settings import Settings, child_environment, configure_logging


@click.group(cls=SecretSafeGroup)
def main() -> None:
    """Omnichannel profile builder: collector, Faust worker, profiles, triggers, ops."""


# --- infra --------------------------------------------------------------------------
@main.group()
def infra() -> None:
    """Local Kafka (KRaft) and PostgreSQL on this machine, no Docker."""


def _print_states(states, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for col in ("service", "state", "address", "version", "pid", "detail"):
        table.add_column(col)
    for s in states:
        colour = {"running": "green", "external": "cyan", "stopped": "yellow"}.get(s.state, "red")
        detail = s.detail + (f" ({s.seconds:.1f}s)" if s.seconds >= 0.05 else "")
        table.add_row(s.name, f"[{colour}]{s.state}[/{colour}]", s.address, s.version,
                      str(s.pid or ""), detail)
    console.print(table)


def _print_exports(settings: Settings) -> None:
    click.echo("Settings to use (the database password is the configured one, shown as ***):")
    click.echo(f"  export STREAMS_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}")
    click.echo(f"  export STREAMS_DATABASE_URL={settings.redacted_database_url()}")


@infra.command("up")
@click.option("--fresh", is_flag=True, help="Wipe Kafka's and PostgreSQL's data first.")
def infra_up_cmd(fresh: bool) -> None:
    """Start Kafka and PostgreSQL (or find them running) and wait until both answer."""
    from streams.infra import InfraError, infra_up

    settings = settings_or_exit()
    started = time.monotonic()
    try:
        with console.status("bringing up Kafka and PostgreSQL..."):
            states = infra_up(settings, fresh=fresh)
    except InfraError as exc:
        fail(str(exc))
    _print_states(states, f"infra up in {time.monotonic() - started:.1f}s")
    _print_exports(settings)


@infra.command("down")
def infra_down_cmd() -> None:
    """Stop the local Kafka and PostgreSQL; their data stays."""
    from streams.infra import InfraError, infra_down

    try:
        _print_states(infra_down(settings_or_exit()), "infra down")
    except InfraError as exc:
        fail(str(exc))


@infra.command("status")
def infra_status_cmd() -> None:
    """What runs, where, and which version."""
    from streams.infra import infra_status

    states = infra_status(settings_or_exit())
    _print_states(states, "infra status")
    if any(s.state not in ("running", "external") for s in states):
        sys.exit(3)


# --- database -----------------------------------------------------------------------
@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.argument("revision", default="heads")
def db_upgrade(revision: str) -> None:
    """Apply schema migrations up to REVISION (default: the newest)."""
    from sqlalchemy.exc import OperationalError

    from streams import db as dbmod

    settings = settings_or_exit()
    try:
        dbmod.upgrade(settings, revision)
        console.print(f"database {settings.redacted_database_url()} at revision "
                      f"{', '.join(dbmod.current_revisions(settings))}")
    except OperationalError as exc:
        fail(f"cannot reach {settings.redacted_database_url()}: "
              f"{str(exc.orig).strip().splitlines()[0] if exc.orig else exc}")


# --- worker -------------------------------------------------------------------------
@main.command()
def worker() -> None:
    """Run a Faust worker: validate, resolve identity, fold events into profiles.

    Any number of workers may run; they share the topics' partitions. Each folds its
    batches in STREAMS_FOLD_PROCESSES processes of its own (default 2; 0 = in the
    worker's loop), which stop with it. With STREAMS_WORKER_METRICS_PORT set it serves
    its own /metrics on STREAMS_HTTP_HOST at that port.
    """
    from streams.app import create_app, tune_gc
    from streams.metrics import serve_worker_metrics
    from streams.ops.views import OpsConfigError
    from streams.pipeline.shutdown import StreamsWorker as Worker
    from streams.topics import ensure_topics

    settings, _ = with_local_secrets(settings_or_exit(), tokens=False)  # access: forget key
    configure_logging(settings)
    if settings.triggers_enabled:  # a bad rules file: every problem named, before Kafka
        from streams.triggers.rules import RulesError, load_rules

        try:
            load_rules(settings.triggers_file)
        except RulesError as exc:
            fail(f"STREAMS_TRIGGERS_FILE: {exc}", code=2)
    try:
        # Before Kafka: a port already taken is a configuration error, found at once.
        metrics_server = serve_worker_metrics(settings)
    except OpsConfigError as exc:
        fail(str(exc), code=2)
    except OSError as exc:
        fail(f"cannot serve worker metrics on {settings.http_host}:"
             f"{settings.worker_metrics_port}: {exc.strerror or exc}", code=2)
    if metrics_server is not None:
        console.print(f"worker metrics on http://{settings.http_host}:{metrics_server.port}"
                      "/metrics")
    try:
        created = asyncio.run(ensure_topics(settings))
    except Exception as exc:  # noqa: BLE001 - one clear line for any connection failure
        fail(f"cannot reach Kafka at {settings.kafka_bootstrap}: {exc}")
    if created:
        console.print(f"created topics: {', '.join(created)}")
    app = create_app(settings)
    tune_gc()  # perf: see streams.pipeline.tuning.GC_THRESHOLDS
    worker_ = Worker(app, loglevel=settings.log_level, quiet=True, redirect_stdouts=False)
    worker_.execute_from_commandline()


# --- serve ----------------------------------------------------------------------------
@main.command()
def serve() -> None:
    """Run the HTTP server: collector (/v1/*), profile API and the /ops dashboard."""
    from aiohttp import web

    from streams.server import create_web_app

    settings = settings_or_exit()
    configure_logging(settings)
    # --- access: beyond loopback, no demo write keys and explicit tokens and forget key;
    # on loopback what is unset comes from <data_dir>/secrets.json ---
    from streams.auth import AccessConfigError, check_exposure, is_loopback

    try:
        check_exposure(settings)
    except AccessConfigError as exc:
        fail(str(exc), code=2)
    local = None
    if is_loopback(settings.http.host):
        settings, local = with_local_secrets(settings, tokens=True)
    # --- ops: an unsafe binding (non-loopback without STREAMS_OPS_TOKEN) is refused ---
    from streams.ingest.views import CollectorConfigError
    from streams.ops.views import OpsConfigError

    try:
        web_app = create_web_app(settings)
    except (OpsConfigError, AccessConfigError, CollectorConfigError) as exc:
        fail(str(exc), code=2)
    # --- end ops ---
    console.print(f"serving on http://{settings.http_host}:{settings.http_port}")
    print_token_use(settings, local, show=False)
    web.run_app(web_app, host=settings.http_host, port=settings.http_port,
                print=None, access_log=None)


# --- bench ----------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--quick", is_flag=True,
              help="Small counts, one repeat, no reference code: keeps the harness working in CI.")
@click.option("--repeat", type=click.IntRange(1, 20), default=None,
              help="Repeats of each product figure (default 3; quick: 1).")
@click.option("--sizes", default=None, metavar="N,N,...",
              help="Profile counts of the growth runs (default 10000,100000,1000000).")
@click.option("--main-size", type=int, default=None,
              help="The size at which the baselines and the other runs are measured "
                   "(default 100000, or the largest size below it).")
@click.option("--against", default=None, metavar="REF",
              help="Also fold with the code of this commit (default 6237909; 'none' to skip).")
@click.option("--no-triggers", is_flag=True, help="Skip the trigger stage's figures.")
@click.option("--only", type=click.Choice(["stage"]), default=None,
              help="stage: only the profile stage, the no-op agent and the reference code, "
                   "in rounds at each size (minutes, not an hour).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              default=Path("bench-results"), show_default=True,
              help="Folder of the JSON and Markdown results.")
@click.pass_context
def bench(ctx: click.Context, quick: bool, repeat: int | None, sizes: str | None,
          main_size: int | None, against: str | None, no_triggers: bool, only: str | None,
          out: Path) -> None:
    """Benchmarks, each measured against a baseline run in the same process tree.

    Without a subcommand: the harness. Every measurement in one run against the local
    Kafka and PostgreSQL (baselines, the product, growth), written to OUT as JSON and
    Markdown; each product figure repeated (median and spread). The full plan takes
    about an hour on 2 cores; --quick about two minutes.
    """
    if ctx.invoked_subcommand is not None:
        return
    from streams.bench import harness

    plan = harness.QUICK if quick else harness.Plan()
    updates: dict = {}
    if repeat is not None:
        updates["repeat"] = repeat
    if sizes:
        try:
            updates["sizes"] = tuple(sorted(int(x.replace("_", "")) for x in sizes.split(",")))
        except ValueError:
            fail(f"--sizes: expected comma-separated profile counts, got {sizes!r}", code=2)
    if against is not None:
        updates["against"] = None if against.lower() == "none" else against
    if no_triggers:
        updates["triggers"] = None
    if only:
        updates["only"] = only
    plan = dataclasses.replace(plan, **updates)
    chosen = main_size or max([s for s in plan.sizes if s <= 100_000] or [min(plan.sizes)])
    if chosen not in plan.sizes:
        fail(f"--main-size {chosen} is not one of the sizes {list(plan.sizes)}", code=2)
    plan = dataclasses.replace(plan, main=chosen)
    json_path, md_path = harness.run(settings_or_exit(), plan, out)
    console.print(md_path.read_text())
    console.print(f"written: {json_path} and {md_path}")


# --- ingest: dlq, demo, bench collector ------------------------------------------------
from streams.bench.collector import bench_collector  # noqa: E402
from streams.ingest.commands import demo, dlq  # noqa: E402

bench.add_command(bench_collector)
main.add_command(dlq)
main.add_command(demo)
# --- end ingest -------------------------------------------------------------------------


# --- up -------------------------------------------------------------------------------
# The long-running parts `streams up` starts, each its own process writing to its own log
# (the order is the start order); demo traffic starts once the server answers.
UP_PARTS: list[tuple[str, list[str]]] = [
    ("worker", ["worker"]),
    ("server", ["serve"]),
]
DEMO_DURATION = 86_400.0  # the longest `streams demo` runs; `up` restarts nothing after it
STOP_GRACE = 30.0  # seconds the parts get to stop on SIGTERM before they are killed


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _stop_parts(children: list[tuple[str, subprocess.Popen]]) -> None:
    """SIGTERM every running part and wait for all (STOP_GRACE in all); then, or at a
    second Ctrl-C, kill what is left. Blocks until every part has exited."""
    for _, proc in children:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    try:
        for _, proc in children:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        # Out of time, or asked again: stop waiting, without a third interruption's traceback.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for _, proc in children:
            if proc.poll() is None:
                proc.kill()
        for _, proc in children:
            proc.wait()


def _wait_http(url: str, timeout: float) -> bool:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except OSError:
            time.sleep(0.3)
    return False


def _fetch_demo_sdk(settings: Settings) -> None:
    """Segment's browser SDK for /demo from npm into the cache (once); a warning, not a
    failure, when it cannot be fetched (the rest of `up` works without it)."""
    from streams.demo.sdk import VERSION, SdkFetchError, bundle_dir, ensure_sdk

    if bundle_dir(settings.cache_dir) is not None:
        return
    try:
        with console.status(f"demo storefront: @segment/analytics-next {VERSION} from npm..."):
            ensure_sdk(settings.cache_dir)
        console.print(f"demo storefront: @segment/analytics-next {VERSION} in the cache")
    except SdkFetchError as exc:
        err_console.print(f"[yellow]warning:[/yellow] /demo has no browser SDK: {exc}")


@main.command()
@click.option("--fresh", is_flag=True, help="Wipe local Kafka and PostgreSQL data first.")
@click.option("--only-infra", is_flag=True, help="Bring up infra, schema and topics, then exit.")
@click.option("--demo-rate", default=20.0, show_default=True, type=click.FloatRange(0),
              help="Simulated events per second through the collector (0: no demo traffic).")
@click.option("--demo-people", default=200, show_default=True, type=click.IntRange(1),
              help="Simulated people in the demo traffic.")
def up(fresh: bool, only_infra: bool, demo_rate: float, demo_people: int) -> None:
    """The whole thing on this machine: infra, migrations, topics, worker, server and
    demo traffic from web, mobile, watch and social sources.

    Runs in the foreground; Ctrl-C (or SIGTERM) stops the worker, server and demo and
    leaves Kafka and PostgreSQL running (`streams infra down` stops them).
    """
    # SIGTERM, and SIGHUP (the terminal closed), stop us the way Ctrl-C does, so that the
    # parts (in process groups of their own, see start()) are always stopped.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)
    t0 = time.monotonic()
    try:
        from streams import db as dbmod
        from streams.infra import InfraError, infra_up
        from streams.topics import ensure_topics

        # The API token and forget key of this machine, made once, passed to the parts.
        settings, local = with_local_secrets(settings_or_exit(), tokens=True)
        try:
            with console.status("infra: Kafka and PostgreSQL..."):
                states = infra_up(settings, fresh=fresh)
        except InfraError as exc:
            fail(str(exc))
        _print_states(states, "infra")
        with console.status("database migrations..."):
            dbmod.upgrade(settings)
        console.print(f"schema at revision {', '.join(dbmod.current_revisions(settings))}")
        created = asyncio.run(ensure_topics(settings))
        console.print(f"topics ready ({len(settings.all_topics)}; created {len(created)})")
        _fetch_demo_sdk(settings)
    except KeyboardInterrupt:
        # Not click's "Aborted!" nor a traceback: being stopped is not an error.
        console.print("stopped before everything was up")
        sys.exit(130)
    _print_exports(settings)
    if only_infra:
        print_token_use(settings, local, show=True)
        console.print(f"up in {time.monotonic() - t0:.1f}s")
        return

    children: list[tuple[str, subprocess.Popen]] = []
    logs = settings.data_dir.resolve() / "logs"
    logs.mkdir(parents=True, exist_ok=True)

    def start(name: str, argv: list[str]) -> None:
        # A process group of its own: the terminal's Ctrl-C reaches only `up`, which stops
        # the parts in order with SIGTERM (a part hit by both would exit on its own first
        # and be reported as having failed).
        with open(logs / f"{name}.log", "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "streams", *argv], stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    process_group=0, env=child_environment(settings))
        children.append((name, proc))

    code = 0
    try:
        for name, argv in UP_PARTS:
            start(name, argv)
        base = f"http://{settings.http_host}:{settings.http_port}"
        if not _wait_http(f"{base}/healthz", timeout=60):
            raise click.ClickException(
                f"the server did not answer on {base} within 60s; see {logs / 'server.log'}")
        if demo_rate > 0:
            start("demo", ["demo", "--rate", str(demo_rate), "--people", str(demo_people),
                           "--duration", str(DEMO_DURATION), "--url", base])
        console.print(f"up in {time.monotonic() - t0:.1f}s; running: "
                      + ", ".join(f"{n} (pid {p.pid})" for n, p in children))
        click.echo(f"  demo shop   {base}/demo   <- start here: click, sign in, then follow "
                   "your profile link")
        click.echo(f"  collector   {base}/v1/batch")
        click.echo(f"  profiles    {base}/v1/profiles?identifier=TYPE:VALUE")
        click.echo(f"  dashboard   {base}/ops")
        click.echo(f"  people      {base}/people")
        click.echo(f"  metrics     {base}/metrics")
        click.echo(f"  logs        {logs}/")
        print_token_use(settings, local, show=True)
        if demo_rate > 0:
            click.echo(f"Demo traffic: {demo_rate:g} events/s from {demo_people} simulated people "
                       "(web, app, watch, social).")
        click.echo("Ctrl-C stops these; `streams infra down` stops Kafka and PostgreSQL.")
        while True:
            for name, proc in children:
                if proc.poll() is not None and not (name == "demo" and proc.returncode == 0):
                    raise click.ClickException(
                        f"{name} exited with code {proc.returncode}; see {logs / (name + '.log')}")
            time.sleep(0.5)
    except KeyboardInterrupt:
        if children:
            console.print("stopping " + ", ".join(name for name, _ in children) + "...")
    except click.ClickException as exc:
        err_console.print(f"[red]error:[/red] {exc.message}")
        code = 1
    finally:
        _stop_parts(children)
    sys.exit(code)


# --- ops: `streams lag` ----------------------------------------------------------------
from streams.ops.commands import lag as _lag_command  # noqa: E402

main.add_command(_lag_command)
# --- end ops ---


# --- profiles domain ------------------------------------------------------------------
from streams.bench.pipeline import pipeline as _pipeline_bench  # noqa: E402
from streams.bench.triggers import triggers as _triggers_bench  # noqa: E402
from streams.profiles.commands import profile as _profile_group  # noqa: E402
from streams.profiles.commands import rebuild_cmd as _rebuild  # noqa: E402

main.add_command(_profile_group)
main.add_command(_rebuild)
bench.add_command(_pipeline_bench)
bench.add_command(_triggers_bench)


# --- triggers domain: `streams triggers ...`, `streams messages tail` -----------------
from streams.triggers.commands import messages as _messages_group  # noqa: E402
from streams.triggers.commands import triggers as _triggers_group  # noqa: E402

main.add_command(_triggers_group)
main.add_command(_messages_group)
# --- end triggers ---

if __name__ == "__main__":  # pragma: no cover
    main()
