"""``streams bench collector``: accepted events/s through ``/v1/batch`` against the raw
aiokafka producer rate, measured in the same run on the same broker.

The raw rate is the ceiling: the same producer settings (acks=all, idempotence, linger,
batch size) sending already-serialized events with no HTTP, parsing or validation. The
collector runs as a real ``streams serve`` subprocess; the load generator posts
pre-built Segment batches over loopback from this process, with bounded concurrency, a
bounded event count and a time cap, and counts only events the answers report accepted.
"""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import psutil

from streams.infra.procs import stop_session
from streams.settings import Settings, child_environment

# Targets of the issue: 20,000 accepted events/s on this 2-core machine, and at least
# half the raw producer's rate.
TARGET_EVENTS_PER_SECOND = 20_000
TARGET_RATIO = 0.5


@dataclass(frozen=True)
class BenchResult:
    """Figures of one run."""

    events: int
    raw_events_per_second: float
    raw_seconds: float
    collector_events_per_second: float
    collector_seconds: float
    collector_accepted: int
    collector_failed_requests: int
    batch_size: int
    concurrency: int
    # CPU time per event: of this process during the raw phase, of the collector process
    # during the load phase. Less sensitive than rates to other load on the machine.
    topic_prefix: str = ""
    raw_cpu_us_per_event: float = 0.0
    collector_cpu_us_per_event: float = 0.0
    writer_events_per_second: float = 0.0

    @property
    def ratio(self) -> float:
        """Collector rate over raw producer rate."""
        return (self.collector_events_per_second / self.raw_events_per_second
                if self.raw_events_per_second else 0.0)


def sample_event(i: int, run: str) -> dict:
    """A realistic Segment track/page/screen/identify event of about 500 bytes."""
    person = f"{run}-p{i % 5000}"
    kind = i % 10
    base = {
        "messageId": f"{run}-{i}",
        "anonymousId": f"anon-{person}",
        "timestamp": "2026-11-01T10:00:00.000Z",
        "context": {
            "library": {"name": "analytics.js", "version": "5.2.0"},
            "ip": "203.0.113.7", "locale": "en-US", "timezone": "Europe/Berlin",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/131.0",
            "page": {"path": "/products/42", "url": "https://shop.example/products/42",
                     "title": "Trail shoe 42", "referrer": "https://search.example/"},
        },
    }
    if kind < 5:
        return {**base, "type": "track", "event": "Product Clicked",
                "properties": {"product_id": f"sku-{i % 300}", "price": 89.9, "position": kind}}
    if kind < 8:
        return {**base, "type": "page", "name": "Product",
                "properties": {"path": "/products/42", "category": "shoes"}}
    if kind == 8:
        return {**base, "type": "track", "event": "Post Liked",
                "properties": {"channel": "instagram", "post_id": f"post-{i % 50}"}}
    return {**base, "type": "identify", "userId": f"user-{person}",
            "traits": {"email": f"{person}@example.test", "newsletter": True}}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def measure_raw_producer(settings: Settings, values: list[tuple[str, bytes, bytes]]) -> float:
    """Seconds the raw producer takes to send and get acknowledged every value."""
    from streams.kafka import make_producer

    producer = make_producer(settings)
    await producer.start()
    try:
        # Warm up metadata and connections outside the measurement.
        await asyncio.gather(*[await producer.send(t, b"{}", key=b"warm")
                               for t in {t for t, _, _ in values}])
        started = time.perf_counter()
        send = producer.send
        futures = [await send(topic, value, key=key) for topic, key, value in values]
        await asyncio.gather(*futures)
        return time.perf_counter() - started
    finally:
        await producer.stop()


async def measure_raw_writer(settings: Settings, values: list[tuple[str, bytes, bytes]],
                             chunk: int) -> float:
    """Seconds the collector's own batching writer takes for every value, without HTTP,
    parsing or validation (in chunks of ``chunk`` records, as requests would)."""
    from streams.kafka import EventWriter, OutgoingRecord

    writer = EventWriter(settings)
    await writer.start()
    try:
        records = [OutgoingRecord(t, k, v) for t, k, v in values]
        await writer.write(records[:1])
        started = time.perf_counter()
        await asyncio.gather(*(writer.write(records[i:i + chunk])
                               for i in range(0, len(records), chunk)))
        return time.perf_counter() - started
    finally:
        await writer.stop()


async def _wait_ready(url: str, proc: subprocess.Popen, within: float = 60.0) -> None:
    from aiohttp import ClientSession

    deadline = time.monotonic() + within
    async with ClientSession() as session:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"streams serve exited with code {proc.returncode}")
            try:
                async with session.get(url + "/healthz") as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"streams serve did not answer on {url} within {within:.0f}s")


async def load_collector(
    url: str, write_key: str, bodies: list[tuple[bytes, int]], concurrency: int,
    time_cap: float,
) -> tuple[float, int, int]:
    """Post every body (bounded by ``time_cap`` seconds); returns (seconds, events
    accepted, failed requests)."""
    from aiohttp import ClientSession, ClientTimeout, TCPConnector

    auth = "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()
    headers = {"Authorization": auth, "Content-Type": "application/json"}
    queue: asyncio.Queue[tuple[bytes, int]] = asyncio.Queue()
    for item in bodies:
        queue.put_nowait(item)
    accepted = 0
    failed = 0
    deadline = time.monotonic() + time_cap

    async def worker(session: ClientSession) -> None:
        nonlocal accepted, failed
        while time.monotonic() < deadline:
            try:
                body, _count = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            async with session.post(url + "/v1/batch", data=body, headers=headers) as resp:
                payload = await resp.read()
                if resp.status == 200:
                    accepted += orjson.loads(payload)["accepted"]
                else:
                    failed += 1

    connector = TCPConnector(limit=concurrency)
    async with ClientSession(connector=connector, timeout=ClientTimeout(total=60)) as session:
        # One warm-up request outside the measurement (connections, producer metadata).
        warm_body, _ = bodies[0]
        async with session.post(url + "/v1/batch", data=warm_body, headers=headers) as resp:
            if resp.status != 200:
                raise RuntimeError(f"collector answered {resp.status}: {await resp.text()}")
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        return time.perf_counter() - started, accepted, failed


def _start_server(settings: Settings, log_path: str | None) -> subprocess.Popen:
    """``streams serve`` in its own session, its output to ``log_path``."""
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen([sys.executable, "-m", "streams", "serve"],
                                env=child_environment(settings), stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    finally:
        if log is not subprocess.DEVNULL:
            log.close()  # the child has its own copy


async def run_bench(
    settings: Settings, *, events: int, batch_size: int, concurrency: int,
    time_cap: float = 120.0, log_path: str | None = None, say=print,
) -> BenchResult:
    """Run both measurements on throwaway topics, which it creates and deletes.

    Raises RuntimeError when the server does not come up or answers the warm-up badly.
    """
    from aiokafka.admin import AIOKafkaAdminClient

    from streams.events.topics import topic_for
    from streams.ingest import logic
    from streams.ingest.models import RoutedEvent
    from streams.topics import ensure_topics

    write_key = next((k for k, src in settings.collector.write_keys.items() if src == "web"), None)
    if write_key is None:
        raise RuntimeError("STREAMS_WRITE_KEYS has no key bound to source web")
    run = uuid.uuid4().hex[:8]
    bench_settings = settings.model_copy(update={
        "topic_prefix": f"bench{run}.", "collector_rate": 0.0,
        "http_port": _free_port(), "http_host": "127.0.0.1",
    })
    created = await ensure_topics(bench_settings)
    proc: subprocess.Popen | None = None
    try:
        samples = [sample_event(i, run) for i in range(events)]
        now = datetime(2026, 11, 1, 10, 0, 1, tzinfo=UTC)
        values = []
        for raw in samples:
            routed = logic.normalize_event(raw, index=None, path_type=None, key_source="web",
                                           received_at=now)
            assert isinstance(routed, RoutedEvent), routed
            values.append((topic_for(bench_settings, routed.kind), routed.key.encode(),
                           routed.value))
        say(f"raw aiokafka producer: {events} events...")
        me = psutil.Process()
        cpu_before = sum(me.cpu_times()[:2])
        raw_seconds = await measure_raw_producer(bench_settings, values)
        raw_cpu = sum(me.cpu_times()[:2]) - cpu_before
        say(f"collector's batching writer alone (no HTTP, no validation): {events} events...")
        writer_seconds = await measure_raw_writer(bench_settings, values, batch_size)

        bodies = []
        for start in range(0, events, batch_size):
            chunk = samples[start:start + batch_size]
            bodies.append((orjson.dumps({"batch": chunk,
                                         "sentAt": "2026-11-01T10:00:00.500Z"}), len(chunk)))
        url = f"http://127.0.0.1:{bench_settings.http_port}"
        proc = _start_server(bench_settings, log_path)
        await _wait_ready(url, proc)
        say(f"collector /v1/batch: {events} events in batches of {batch_size}, "
            f"{concurrency} concurrent requests...")
        server = psutil.Process(proc.pid)
        server_before = sum(server.cpu_times()[:2])
        seconds, accepted, failed = await load_collector(url, write_key, bodies, concurrency,
                                                         time_cap)
        server_cpu = sum(server.cpu_times()[:2]) - server_before
        return BenchResult(
            events=events, raw_events_per_second=events / raw_seconds, raw_seconds=raw_seconds,
            collector_events_per_second=accepted / seconds if seconds else 0.0,
            collector_seconds=seconds, collector_accepted=accepted,
            collector_failed_requests=failed, batch_size=batch_size, concurrency=concurrency,
            topic_prefix=bench_settings.topic_prefix,
            raw_cpu_us_per_event=raw_cpu / events * 1e6,
            collector_cpu_us_per_event=server_cpu / max(accepted, 1) * 1e6,
            writer_events_per_second=events / writer_seconds,
        )
    finally:
        if proc is not None:
            stop_session(proc)
        if created:
            admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
            await admin.start()
            try:
                await admin.delete_topics(created)
            finally:
                await admin.close()


# --- the command ------------------------------------------------------------------------
import click  # noqa: E402 - the command sits below the library part on purpose


@click.command("collector")
@click.option("--events", default=100_000, show_default=True, type=click.IntRange(1000, 2_000_000),
              help="Events sent through each path.")
@click.option("--batch-size", default=100, show_default=True, type=click.IntRange(1, 5000),
              help="Events per /v1/batch request (Segment SDKs send up to 100).")
@click.option("--concurrency", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Requests in flight at once.")
@click.option("--time-cap", default=120.0, show_default=True, type=click.FloatRange(5, 600),
              help="Stop posting after this many seconds.")
def bench_collector(events: int, batch_size: int, concurrency: int, time_cap: float) -> None:
    """Collector /v1/batch accepted events/s vs the raw aiokafka producer, same run."""
    import tempfile

    from rich.console import Console
    from rich.table import Table

    from streams.settings import load_settings

    console = Console(width=None if sys.stdout.isatty() else 160)
    settings = load_settings()
    log_path = os.path.join(tempfile.gettempdir(), f"streams-bench-collector-{os.getpid()}.log")
    try:
        result = asyncio.run(run_bench(settings, events=events, batch_size=batch_size,
                                       concurrency=concurrency, time_cap=time_cap,
                                       log_path=log_path, say=console.print))
    except Exception as exc:  # noqa: BLE001 - one clear line, the server log for details
        console.print(f"[red]error:[/red] {exc} (server log: {log_path})")
        sys.exit(1)
    table = Table(title=f"bench collector: {events} events, acks=all, idempotent, "
                        f"linger {settings.producer_linger_ms} ms, "
                        f"compression {settings.producer_compression}", title_justify="left")
    for col in ("path", "events", "seconds", "events/s", "CPU µs/event", "target", "met"):
        table.add_column(col)
    ok_rate = result.collector_events_per_second >= TARGET_EVENTS_PER_SECOND
    ok_ratio = result.ratio >= TARGET_RATIO
    table.add_row("raw aiokafka producer (send per event)", str(events),
                  f"{result.raw_seconds:.2f}", f"{result.raw_events_per_second:,.0f}",
                  f"{result.raw_cpu_us_per_event:.1f}", "baseline", "")
    table.add_row("collector's batching writer alone (info)", str(events),
                  f"{events / result.writer_events_per_second:.2f}",
                  f"{result.writer_events_per_second:,.0f}", "", "", "")
    table.add_row(f"collector /v1/batch ({batch_size}/request, {concurrency} in flight)",
                  str(result.collector_accepted), f"{result.collector_seconds:.2f}",
                  f"{result.collector_events_per_second:,.0f}",
                  f"{result.collector_cpu_us_per_event:.1f}",
                  f">= {TARGET_EVENTS_PER_SECOND:,}", "yes" if ok_rate else "NO")
    table.add_row("ratio collector / raw aiokafka producer", "", "", f"{result.ratio:.2f}", "",
                  f">= {TARGET_RATIO}", "yes" if ok_ratio else "NO")
    console.print(table)
    if result.collector_failed_requests:
        console.print(f"[yellow]{result.collector_failed_requests} requests failed[/yellow]")
    if result.collector_accepted < events:
        console.print(f"[yellow]only {result.collector_accepted} of {events} events were "
                      f"accepted within {time_cap:.0f}s[/yellow]")
