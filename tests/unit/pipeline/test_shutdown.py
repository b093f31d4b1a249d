"""The runner's drain when the worker stops (``streams.pipeline.shutdown``), against
fakes: batches in flight are waited for up to the grace, then cancelled unacknowledged;
nothing is run after; Faust is told not to wait for the events left."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from streams.pipeline import shutdown
from tests.unit.pipeline.fakes import ScriptedStage, events
from tests.unit.pipeline.test_runner import make_runner


class StuckStage(ScriptedStage):
    """Stores a batch only once ``release`` is set (a row lock held elsewhere)."""

    def __init__(self):
        super().__init__()
        self.release = asyncio.Event()
        self.started = asyncio.Event()

    async def write(self, events):
        self.started.set()
        await self.release.wait()
        return await super().write(events)


class FakeApp:
    """What the drain uses of a Faust app: its ``conf``."""

    def __init__(self):
        self.conf = SimpleNamespace(stream_wait_empty=True)


async def test_a_batch_stuck_past_the_grace_is_cancelled_unacknowledged():
    stage = StuckStage()
    runner, acked, crashed = make_runner(stage)
    batch = events({"id": "a"}, {"id": "b"})
    await runner.submit(batch)
    await stage.started.wait()
    assert await runner.drain(grace=0.05) == 1
    assert acked == [] and crashed == [] and stage.stored == []
    assert runner.executor.closed is True  # killed: its processes may be stuck too
    assert all(e.message.refs == 1 for e in batch)  # still held: never committed


async def test_a_batch_finishing_within_the_grace_is_stored_and_acknowledged():
    stage = StuckStage()
    runner, acked, _ = make_runner(stage)
    batch = events({"id": "a"})
    await runner.submit(batch)
    await stage.started.wait()
    asyncio.get_running_loop().call_later(0.05, stage.release.set)
    assert await runner.drain(grace=5) == 0
    assert acked == batch and stage.stored == ["a"]
    assert runner.executor.closed is False  # stopped after its batch, not killed


async def test_a_batch_taken_after_the_drain_is_held_and_never_run():
    stage = ScriptedStage()
    runner, acked, _ = make_runner(stage)
    await runner.drain(grace=1)
    batch = events({"id": "late"})
    await runner.submit(batch)
    await asyncio.sleep(0)
    assert stage.calls == [] and acked == []
    assert batch[0].message.refs == 1  # its offset is not committed


async def test_the_worker_drains_every_runner_then_faust_stops_waiting_for_acks():
    app = FakeApp()
    stuck, idle = StuckStage(), ScriptedStage()
    first, _, _ = make_runner(stuck)
    second, _, _ = make_runner(idle)
    shutdown.track(app, first)
    shutdown.track(app, second)
    await first.submit(events({"id": "a"}))
    await stuck.started.wait()
    assert await shutdown.drain(app, grace=0.05) == 1
    assert first.draining and second.draining
    assert app.conf.stream_wait_empty is False


async def test_mode_runs_a_services_own_on_stop_before_stopping_its_children():
    # ``StreamsWorker`` drains in its ``on_stop`` because mode runs it before stopping the
    # app (a child of the worker); an upgrade changing that order must fail here.
    from mode import Service

    order: list[str] = []

    class Child(Service):
        async def on_stop(self) -> None:
            order.append("child")

    class Parent(Service):
        async def on_stop(self) -> None:
            order.append("parent")

    parent = Parent()
    parent.add_dependency(Child())
    await parent.start()
    await parent.stop()
    assert order == ["parent", "child"]
