"""``streams bench``: every measurement in one invocation, against the real local Kafka and
PostgreSQL, written as JSON and as a Markdown table.

What one run measures, each product figure ``repeat`` times (median and spread):

- baselines, this machine's limits for the work: the raw aiokafka producer; raw
  ``getmany`` + decode; the no-op Faust agent; a bulk upsert of profile-shaped rows;
- the product: the collector (events/s, CPU µs/event); end to end from the topics into
  committed profiles (events/s; CPU µs/event of the worker, its fold processes,
  PostgreSQL and the broker); p50/p99 produce -> commit at half the rate; two worker
  processes sharing the partitions; the trigger stage's figures; and the same end-to-end
  run with the code of an earlier commit (``--against``), for "CPU per event halved";
- growth: end to end at each size (10,000, 100,000, 1,000,000 profiles by default) with
  PostgreSQL bytes per profile and worker memory.

Events are generated and produced one at a time (``iter_events``), so the bench's own
memory does not grow with the size; its peak RSS is reported.
"""

from __future__ import annotations

import asyncio
import os
import platform
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psutil
from sqlalchemy import text

from streams.bench import baselines
from streams.bench.logs import log_path
from streams.bench.meter import CpuMeter
from streams.bench.pipeline import (
    bench_settings,
    bytes_per_profile,
    console,
    drop_bench,
    end_total,
    iter_events,
    latency_quantiles,
    produce,
    run_workers,
    tree_rss,
)
from streams.bench.report import Results
from streams.infra.procs import stop_session
from streams.profiles.store import event_partitions
from streams.settings import Settings

WORKER = [sys.executable, "-m", "streams", "worker"]
NOOP = [sys.executable, "-m", "streams.bench.noop_worker"]


@dataclass(frozen=True)
class Plan:
    """What a run measures: profile counts (``sizes``; the baselines, the reference code,
    the latency and the two-worker runs at ``main``), repeats, and the other parts."""

    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    main: int = 100_000
    per_profile: int = 2
    repeat: int = 3
    against: str | None = "6237909"
    collector_events: int = 100_000
    latency_seconds: float = 15.0
    triggers: dict | None = field(default_factory=lambda: {
        "people": 100_000, "per_profile": 2, "messages": 100_000, "spread_seconds": 60.0,
        "emitters": 2})
    quick: bool = False
    # "stage": only the profile stage against the no-op agent and the reference code,
    # in rounds at each size (``Harness.stage_rounds``); None: everything.
    only: str | None = None


# 8,000 profiles: the stage folds their 16,000 events in a second or two, several of the
# bench's 0.2 s offset commits (2,000 took less than one on a quiet machine: nothing to
# time between the first commit and the last). The same for the trigger stage's end to
# end runs (its 2,000 people once fell within one commit in CI).
QUICK = Plan(sizes=(8_000,), main=8_000, repeat=1, against=None, collector_events=5_000,
             latency_seconds=3.0, quick=True,
             triggers={"people": 8_000, "per_profile": 2, "messages": 300,
                       "spread_seconds": 3.0, "emitters": 1})


def machine() -> str:
    """This machine in one line: cores, memory, CPU model, Python."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = psutil.virtual_memory().total / 2**30
    return (f"{os.cpu_count()} cores, {mem:.0f} GiB, {model or platform.machine()}, "
            f"Python {platform.python_version()}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def reference_tree(ref: str) -> Path:
    """The package of commit ``ref`` unpacked into a temporary folder (``git archive``),
    for running its worker with ``PYTHONPATH`` pointing there. Raises
    CalledProcessError when git does not know ``ref``. Blocks."""
    folder = Path(tempfile.mkdtemp(prefix=f"streams-{ref[:12]}-"))
    tar_path = folder / "ref.tar"
    with tar_path.open("wb") as out:
        subprocess.run(["git", "archive", "--format=tar", ref, "streams", "schemas"],
                       stdout=out, check=True, timeout=120)
    with tarfile.open(tar_path) as tar:
        tar.extractall(folder, filter="data")
    tar_path.unlink()
    return folder


async def _create_topic(settings: Settings, topic: str) -> None:
    """Create ``topic`` (the broker does not create topics on first use). Blocks."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.errors import TopicAlreadyExistsError

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, settings.topic_partitions,
                                            settings.topic_replication)])
    except TopicAlreadyExistsError:
        pass
    finally:
        await admin.close()


def _reference_env(tree: Path) -> dict[str, str]:
    """The environment that makes a child import the reference code: it runs in ``tree``
    (``python -m`` puts the working folder first on the path) and has it on PYTHONPATH,
    ahead of this checkout's editable install (a finder at the end of the meta path)."""
    return {"PYTHONPATH": str(tree)}


async def _create_reference_schema(settings: Settings, tree: Path) -> None:
    """Create the profiles schema with the reference code's own tables. Blocks."""
    from streams.settings import child_environment

    code = ("import asyncio\nfrom streams.settings import load_settings\n"
            "from streams.db import async_engine\n"
            "from streams.profiles.store import create_schema\n"
            "s = load_settings()\n"
            "async def main():\n"
            "    e = async_engine(s)\n"
            "    await create_schema(e, s.profiles_schema)\n"
            "    await e.dispose()\n"
            "asyncio.run(main())\n")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env={**child_environment(settings), **_reference_env(tree)},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE, cwd=tree)
    _, err = await proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"the reference code could not create its schema: {err.decode()[-400:]}")


class Harness:
    """One run of the plan; ``results`` fills as it goes. Every topic and schema it
    creates is removed at the end."""

    def __init__(self, base: Settings, plan: Plan, say=console.print):
        self.base = base.model_copy(update={"triggers_enabled": False})
        self.plan = plan
        self.say = say
        self.started = time.monotonic()
        self.results = Results(meta={
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "machine": machine(),
            "commit": _commit(), "repeat": plan.repeat, "quick": plan.quick,
            "sizes": list(plan.sizes), "events_per_profile": plan.per_profile,
            "batch_size": base.batch_size, "fold_processes": base.fold_processes,
            "against": plan.against})
        self.meter = CpuMeter()
        self.meter.add_self("bench")
        kafka_port = int(base.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])
        self.meter.add_listener("broker", kafka_port)
        self.meter.add_listener("postgres", base.database.port)
        self.reference: Path | None = None

    # --- the parts ----------------------------------------------------------------------
    async def run(self) -> Results:
        """Measure everything in the plan. Blocks for minutes (the full plan: an hour)."""
        from streams.db import async_engine

        engine = async_engine(self.base, pool_size=2, max_overflow=0)
        try:
            if self.plan.against:
                self.say(f"unpacking the code of {self.plan.against}...")
                self.reference = reference_tree(self.plan.against)
            if self.plan.only == "stage":
                for size in self.plan.sizes:
                    await self.stage_rounds(engine, size)
            else:
                for size in self.plan.sizes:
                    await self.size(engine, size)
                await self.collector()
                if self.plan.triggers:
                    await self.triggers()
        finally:
            await engine.dispose()
            if self.reference is not None:
                shutil.rmtree(self.reference, ignore_errors=True)
        self.results.add("bench.peak_rss", "bench process peak RSS", "MiB",
                         resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        self.results.meta["seconds"] = time.monotonic() - self.started
        return self.results

    async def size(self, engine, people: int) -> None:
        """Produce ``people`` × per_profile events into fresh topics; fold them
        ``repeat`` times; at the main size also the baselines and the other runs."""
        from streams.topics import ensure_topics

        settings = bench_settings(self.base)
        main = people == self.plan.main
        total = people * self.plan.per_profile
        r = self.results
        schemas: list[str] = []
        self.results.meta.setdefault("prefixes", []).append(settings.topic_prefix)
        try:
            await ensure_topics(settings)
            self.say(f"[{people:,} profiles] producing {total:,} events...")
            if main:
                await _create_topic(settings, settings.topic("bench.raw"))
                for _ in range(self.plan.repeat):
                    m = await baselines.raw_producer(settings, settings.topic("bench.raw"),
                                                     ((k, v) for k, v, _ in iter_events(
                                                         people, total)), self.meter)
                    r.add("raw.producer.rate", "raw aiokafka producer", "ev/s", m.rate)
                    r.add("raw.producer.cpu_us", "raw aiokafka producer: CPU µs/event",
                          "µs", m.cpu_us("bench"))
            await produce(settings, iter_events(people, total))
            r.add(f"bench.rss@{people}", f"bench process RSS after producing ({people:,})",
                  "MiB", psutil.Process().memory_info().rss / 2**20)
            ends = await end_total(settings)
            if main:
                for _ in range(self.plan.repeat):
                    m = await baselines.raw_consumer(settings, await event_partitions(settings),
                                                     ends, self.meter)
                    r.add("raw.consumer.rate", "raw aiokafka getmany + orjson decode", "ev/s",
                          m.rate)
                    r.add("raw.consumer.cpu_us", "raw getmany + decode: CPU µs/event", "µs",
                          m.cpu_us("bench"))
                for i in range(self.plan.repeat):
                    await self.noop(settings, ends, people, i)
            for i in range(self.plan.repeat):
                await self.fold(engine, settings, ends, people, i, schemas,
                                keep_last=main and i == self.plan.repeat - 1)
            if main:
                await self.upsert(engine, settings)
                for i in range(self.plan.repeat):
                    await self.two_workers(engine, settings, ends, people, i, schemas)
                if self.reference is not None:
                    for i in range(self.plan.repeat):
                        await self.fold(engine, settings, ends, people, i, schemas,
                                        reference=True)
                await self.latency(engine, settings, ends, people, schemas)
        finally:
            await drop_bench(settings, engine, schemas,
                             extra_topics=(settings.topic("bench.raw"),))

    async def latency(self, engine, settings: Settings, ends: int, people: int,
                      schemas: list[str]) -> None:
        """p50/p99 produce -> committed profile at half the median end-to-end rate,
        ``repeat`` times, by a worker of its own once it has folded the topics. Last of
        a size's runs: the events it produces stay in the topics, and a run after it
        would fold them too (and each repeat waits until the ones before are folded)."""
        from streams.profiles.store import create_schema, drop_schema

        run = settings.model_copy(update={
            "consumer_group": f"{settings.consumer_group}-lat",
            "profiles_schema": f"{settings.profiles_schema}_lat"})
        await create_schema(engine, run.profiles_schema)
        schemas.append(run.profiles_schema)
        half = self.results.figures[f"e2e.rate@{people}"].median / 2
        caught = await run_workers(run, [WORKER], ends)
        r = self.results
        try:
            for i in range(self.plan.repeat):
                self.say(f"[{people:,}] latency at {half:,.0f} events/s "
                         f"({i + 1}/{self.plan.repeat})...")
                p50, p99, _ = await latency_quantiles(run, half, self.plan.latency_seconds,
                                                      prefix=f"lat{i}")
                r.add("e2e.p50_ms", "p50 produce -> committed profile, half the rate", "ms",
                      p50 * 1000)
                r.add("e2e.p99_ms", "p99 produce -> committed profile, half the rate", "ms",
                      p99 * 1000)
        finally:
            for proc in caught.procs:
                stop_session(proc)
        await drop_schema(engine, run.profiles_schema)
        schemas.remove(run.profiles_schema)

    async def stage_rounds(self, engine, people: int) -> None:
        """``--only stage``: the no-op agent, the profile stage and the reference code
        (when there is one) in turn, ``repeat`` rounds over the same events, so that a
        loaded machine's swings hit the three runs of a round alike."""
        from streams.topics import ensure_topics

        settings = bench_settings(self.base)
        schemas: list[str] = []
        self.results.meta.setdefault("prefixes", []).append(settings.topic_prefix)
        try:
            await ensure_topics(settings)
            total = people * self.plan.per_profile
            self.say(f"[{people:,} profiles] producing {total:,} events...")
            await produce(settings, iter_events(people, total))
            ends = await end_total(settings)
            for i in range(self.plan.repeat):
                await self.noop(settings, ends, people, i)
                await self.fold(engine, settings, ends, people, i, schemas)
                if self.reference is not None:
                    await self.fold(engine, settings, ends, people, i, schemas,
                                    reference=True)
        finally:
            await drop_bench(settings, engine, schemas)

    async def noop(self, settings: Settings, ends: int, people: int, i: int) -> None:
        """The no-op Faust agent over the same topics, in a group of its own."""
        run = settings.model_copy(update={"consumer_group": f"{settings.consumer_group}-noop{i}"})
        self.say(f"[{people:,}] no-op Faust agent ({i + 1}/{self.plan.repeat})...")
        marks: dict[str, dict] = {}
        pids: list[int] = []

        def started(procs):
            pids.extend(p.pid for p in procs)
            self.meter.add_tree("noop", procs[0].pid)

        caught = await run_workers(run, [NOOP], ends, on_start=started,
                                   on_first=lambda: marks.__setitem__("a", self.meter.snapshot()),
                                   on_done=lambda: marks.__setitem__("b", self.meter.snapshot()))
        for p in caught.procs:
            stop_session(p)
        spent = CpuMeter.spent(marks["a"], marks["b"])
        self.meter.groups.pop("noop", None)
        r = self.results
        r.add(f"noop.rate@{people}", f"no-op Faust agent ({people:,} profiles)", "ev/s",
              caught.rate, baseline="raw.consumer.rate")
        r.add(f"noop.cpu_us@{people}", f"no-op Faust agent: CPU µs/event ({people:,})", "µs",
              spent["noop"] / caught.events * 1e6)

    async def fold(self, engine, settings: Settings, ends: int, people: int, i: int,
                   schemas: list[str], *, keep_last: bool = False,
                   reference: bool = False) -> None:
        """``streams worker`` over the topics into a fresh schema (or the reference
        code's worker): rate, CPU per process group, RSS, bytes per profile."""
        from streams.profiles.store import create_schema, drop_schema

        tag = "ref" if reference else "e2e"
        run = settings.model_copy(update={
            "consumer_group": f"{settings.consumer_group}-{tag}{i}",
            "profiles_schema": f"{settings.profiles_schema}_{tag}{i}"})
        if reference:
            assert self.reference is not None
            await _create_reference_schema(run, self.reference)
        else:
            await create_schema(engine, run.profiles_schema)
        schemas.append(run.profiles_schema)
        what = f"the code of {self.plan.against}" if reference else "profile stage"
        self.say(f"[{people:,}] {what} ({i + 1}/{self.plan.repeat})...")
        marks: dict[str, dict] = {}
        rss: list[int] = []

        def started(procs):
            self.meter.add_process("worker", procs[0].pid)
            self.meter.add_tree("fold", procs[0].pid, include_root=False)

        caught = await run_workers(
            run, [WORKER], ends, rss=rss, on_start=started,
            env=_reference_env(self.reference) if reference else None,
            cwd=self.reference if reference else None,
            on_first=lambda: marks.__setitem__("a", self.meter.snapshot()),
            on_done=lambda: marks.__setitem__("b", self.meter.snapshot()))
        worker = caught.procs[0]
        r = self.results
        try:
            spent = CpuMeter.spent(marks["a"], marks["b"])
            n = caught.events
            label = f"{what} ({people:,} profiles)"
            r.add(f"{tag}.rate@{people}", label, "ev/s", caught.rate,
                  baseline=f"noop.rate@{people}" if f"noop.rate@{people}" in r.figures else None)
            r.add(f"{tag}.cpu_us.stage@{people}", f"{what}: CPU µs/event, worker + fold "
                  f"processes ({people:,})", "µs", (spent["worker"] + spent["fold"]) / n * 1e6,
                  baseline=f"noop.cpu_us@{people}" if not reference else None)
            for group in ("worker", "fold", "postgres", "broker"):
                r.add(f"{tag}.cpu_us.{group}@{people}", f"{what}: CPU µs/event, {group} "
                      f"({people:,})", "µs", spent.get(group, 0.0) / n * 1e6)
            try:
                end_rss = tree_rss(worker.pid)
            except psutil.Error:
                end_rss = rss[-1] if rss else 0
            r.add(f"{tag}.rss@{people}", f"{what}: worker + fold processes RSS at the end "
                  f"({people:,})", "MiB", end_rss / 2**20)
            if not reference:
                bpp, _ = await bytes_per_profile(run)
                r.add(f"e2e.bytes_per_profile@{people}", f"PostgreSQL bytes per profile "
                      f"({people:,})", "B", bpp)
        finally:
            stop_session(worker)
            for name in ("worker", "fold"):
                self.meter.groups.pop(name, None)
        if keep_last:
            self.template_schema = run.profiles_schema
        else:
            await drop_schema(engine, run.profiles_schema)
            schemas.remove(run.profiles_schema)

    async def two_workers(self, engine, settings: Settings, ends: int, people: int, i: int,
                          schemas: list[str]) -> None:
        """Two ``streams worker`` processes of one group sharing the partitions."""
        from streams.profiles.store import create_schema, drop_schema

        run = settings.model_copy(update={
            "consumer_group": f"{settings.consumer_group}-two{i}",
            "profiles_schema": f"{settings.profiles_schema}_two{i}"})
        await create_schema(engine, run.profiles_schema)
        schemas.append(run.profiles_schema)
        self.say(f"[{people:,}] two worker processes ({i + 1}/{self.plan.repeat})...")
        caught = await run_workers(run, [WORKER, WORKER], ends)
        for p in caught.procs:
            stop_session(p)
        self.results.add(f"two.rate@{people}", f"two worker processes ({people:,} profiles)",
                         "ev/s", caught.rate, baseline=f"e2e.rate@{people}")
        await drop_schema(engine, run.profiles_schema)
        schemas.remove(run.profiles_schema)

    async def upsert(self, engine, settings: Settings) -> None:
        """The bulk-upsert baseline, with rows shaped like the ones the stage stored."""
        schema = getattr(self, "template_schema", None)
        if schema is None:
            return
        async with engine.connect() as conn:
            row = (await conn.execute(text(
                f'SELECT profile_id, component_id, document '
                f'FROM "{schema}".profiles LIMIT 1'))).mappings().first()
        if row is None:
            return
        count = min(50_000, self.plan.main)
        for _ in range(self.plan.repeat):
            m = await baselines.bulk_upsert(engine, schema, dict(row), count,
                                            settings.batch_size, self.meter)
            self.results.add("raw.upsert.rate", f"bulk upsert of profile rows, "
                             f"{settings.batch_size} a transaction", "rows/s", m.rate)
            self.results.add("raw.upsert.cpu_us", "bulk upsert: CPU µs/row (client + "
                             "PostgreSQL)", "µs", m.cpu_us("bench", "postgres"))

    async def collector(self) -> None:
        """``streams bench collector``'s measurement, ``repeat`` times."""
        from streams.bench.collector import run_bench

        for i in range(self.plan.repeat):
            self.say(f"collector ({i + 1}/{self.plan.repeat})...")
            path = log_path("collector")
            res = await run_bench(self.base, events=self.plan.collector_events,
                                  batch_size=100, concurrency=16, say=lambda _m: None,
                                  log_path=str(path) if path is not None else None)
            r = self.results
            r.add("collector.raw_rate", "raw aiokafka producer (collector's events)", "ev/s",
                  res.raw_events_per_second)
            r.add("collector.rate", "collector /v1/batch: events/s accepted", "ev/s",
                  res.collector_events_per_second, baseline="collector.raw_rate")
            r.add("collector.cpu_us", "collector: CPU µs/event", "µs",
                  res.collector_cpu_us_per_event)

    async def triggers(self) -> None:
        """``streams bench triggers``'s measurement, ``repeat`` times."""
        from streams.bench.triggers import run_bench

        t = dict(self.plan.triggers or {})
        base = self.base.model_copy(update={"triggers_enabled": True})
        for i in range(self.plan.repeat):
            self.say(f"trigger stage ({i + 1}/{self.plan.repeat})...")
            e2e, due = await run_bench(base, say=lambda *_a, **_k: None, **t)
            r = self.results
            r.add("triggers.off_rate", "end to end, trigger rules off", "ev/s", e2e.off_rate)
            r.add("triggers.on_rate", "end to end, trigger rules on", "ev/s", e2e.on_rate,
                  baseline="triggers.off_rate")
            r.add("triggers.e2e_ratio", "trigger rules on / off", "ratio", e2e.ratio)
            r.add("triggers.spread_p99_ms", "messages due over a window: p99 delay past due",
                  "ms", due.delay_p99 * 1000)
            r.add("triggers.raw_rate", "raw aiokafka producer (the messages)", "msg/s",
                  due.raw_rate)
            r.add("triggers.burst_rate", "messages due at once: emitted per second", "msg/s",
                  due.burst_rate, baseline="triggers.raw_rate")


def run(base: Settings, plan: Plan, out: Path, say=console.print) -> tuple[Path, Path]:
    """Run the plan and write ``bench-<time>.json`` and ``.md`` into ``out``. Blocks."""
    results = asyncio.run(Harness(base, plan, say).run())
    from streams.bench.report import write

    stem = "bench-" + datetime.now(UTC).strftime("%Y%m%dT%H%M") + ("-quick" if plan.quick else "")
    return write(results, out, stem)
