"""The profile stage against the no-op Faust agent and an earlier commit's worker, in
rounds over the same events: ``streams bench``'s own pieces (``Harness.noop``,
``Harness.fold``), without the rest of its plan, so that a loaded machine's swings hit
the three runs of a round alike. Writes the harness's JSON and Markdown after each round.

    .venv/bin/python scripts/bench_stage.py PROFILES ROUNDS OUT_FOLDER [COMMIT]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
from pathlib import Path

from streams.bench.harness import Harness, Plan, reference_tree
from streams.bench.pipeline import bench_settings, drop_bench, end_total, iter_events, produce
from streams.bench.report import write
from streams.settings import load_settings


async def main(people: int, rounds: int, out: Path, against: str) -> None:
    from streams.db import async_engine
    from streams.topics import ensure_topics

    harness = Harness(load_settings(), Plan(sizes=(people,), main=people, repeat=rounds,
                                            against=against, triggers=None))
    engine = async_engine(harness.base, pool_size=2, max_overflow=0)
    harness.reference = reference_tree(against)
    settings = bench_settings(harness.base)
    schemas: list[str] = []
    try:
        await ensure_topics(settings)
        await produce(settings, iter_events(people, people * 2))
        ends = await end_total(settings)
        for i in range(rounds):
            await harness.noop(settings, ends, people, i)
            await harness.fold(engine, settings, ends, people, i, schemas)
            await harness.fold(engine, settings, ends, people, i, schemas, reference=True)
            print(write(harness.results, out, f"stage-r{i}"), flush=True)
    finally:
        await drop_bench(settings, engine, schemas)
        await engine.dispose()
        shutil.rmtree(harness.reference, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]),
                     sys.argv[4] if len(sys.argv) > 4 else "6237909"))
