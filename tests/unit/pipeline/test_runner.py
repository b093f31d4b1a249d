"""The runner's paths against fakes (no broker, no database): decoding errors and data
faults dead-lettered with where and why, events acknowledged only after their batch is
stored, the database waited out, the systemic stop acknowledging nothing."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from streams.pipeline.batch import process_batch
from streams.pipeline.executor import InProcessExecutor
from streams.pipeline.policy import RetryPolicy
from streams.pipeline.runner import StageRunner
from streams.pipeline.stage import StageSpec
from streams.pipeline.systemic import DlqLimit, SystemicFailure, SystemicFailureDetector
from streams.settings import load_settings
from tests.unit.pipeline.fakes import ListSink, ScriptedStage, events, raw, sql_error


async def no_wait(_seconds):
    return None


POLICY = RetryPolicy(tries=3, sleep=no_wait)


class StageExecutor:
    """The in-process executor with a given stage and an instant policy."""

    in_flight = 1

    def __init__(self, stage):
        self.stage = stage
        self.closed = None

    async def start(self):
        pass

    async def run(self, raws):
        return await process_batch(self.stage, raws, POLICY)

    def close(self, kill=False):
        self.closed = kill


DEFAULT_LIMIT = DlqLimit(0.95, 1000, 200)


def make_runner(stage, sink=None, limit=DEFAULT_LIMIT, in_flight=1):
    acked, crashed = [], []
    executor = StageExecutor(stage)
    executor.in_flight = in_flight

    async def ack(event):
        acked.append(event)

    async def crash(exc):
        crashed.append(exc)

    spec = StageSpec("agent", "test", ("t",), lambda s: stage, 0)
    runner = StageRunner(spec, executor, sink or ListSink(), SystemicFailureDetector(limit),
                         hold=lambda e: e.message.incref(), ack=ack, crash=crash)
    return runner, acked, crashed


async def batches(*groups):
    for group in groups:
        yield group


async def test_invalid_record_is_dead_lettered_with_where_and_why_then_all_acked():
    sink = ListSink()
    runner, acked, crashed = make_runner(ScriptedStage(), sink)
    batch = events({"id": "a"}, {"bad": True}, {"id": "c"})
    await runner.run(batches(batch))
    assert runner.executor.stage.stored == ["a", "c"]
    (letter,) = sink.sent
    assert letter.header("x-original-offset") == "1" and letter.header("x-reason") == "/bad: is set"
    assert letter.header("x-origin") == "processing"
    assert orjson.loads(letter.value)["event"] == {"bad": True}
    assert acked == batch and not crashed
    assert all(e.message.refs == 1 for e in batch)  # held until stored


async def test_a_data_fault_is_isolated_to_its_event_by_halving():
    stage = ScriptedStage(poison={"e": sql_error("54000", "index row size 3016 exceeds")})
    sink = ListSink()
    runner, acked, _ = make_runner(stage, sink)
    batch = events(*({"id": i} for i in "abcdefgh"))
    await runner.run(batches(batch))
    assert sorted(stage.stored) == list("abcdfgh")
    (letter,) = sink.sent
    assert letter.header("x-original-offset") == "4"
    reason = letter.header("x-reason")
    assert reason.startswith("data fault: SQLSTATE 54000 program_limit_exceeded")
    assert "secret@example.com" not in reason and "INSERT" not in reason
    # 8 -> 4 -> 2 -> 1: one try each, a data fault is never retried
    assert len(stage.calls) == 1 + 2 + 2 + 2
    assert acked == batch


async def test_an_unknown_failure_is_retried_then_its_event_dead_lettered():
    stage = ScriptedStage(poison={"b": ValueError("cannot fold this event")})
    sink = ListSink()
    runner, acked, _ = make_runner(stage, sink)
    await runner.run(batches(events({"id": "a"}, {"id": "b"})))
    assert stage.stored == ["a"]
    (letter,) = sink.sent
    assert letter.header("x-reason") == "processing failed: ValueError"
    assert len(stage.calls) == 3 + 1 + 3  # the pair 3 times, then each alone


async def test_database_down_is_waited_out_nothing_dead_lettered():
    stage = ScriptedStage(script=[sql_error("57P01")] * 6 + [sql_error("08006")] * 6)
    sink = ListSink()
    runner, acked, _ = make_runner(stage, sink)
    batch = events({"id": "a"}, {"id": "b"})
    await runner.run(batches(batch))
    assert stage.stored == ["a", "b"] and not sink.sent and acked == batch
    assert len(stage.calls) == 13


async def test_nothing_is_acknowledged_before_the_batch_is_stored():
    gate = asyncio.Event()
    order = []

    class SlowStage(ScriptedStage):
        async def write(self, evs):
            await gate.wait()
            order.append("stored")
            return await super().write(evs)

    runner, acked, _ = make_runner(SlowStage())
    runner.ack = lambda e: order.append("ack") or asyncio.sleep(0)
    task = asyncio.ensure_future(runner.run(batches(events({"id": "a"}))))
    await asyncio.sleep(0.05)
    assert order == []
    gate.set()
    await task
    assert order == ["stored", "ack"]


async def test_systemic_failure_crashes_without_dead_letters_or_acks():
    sink = ListSink()
    runner, acked, crashed = make_runner(ScriptedStage(), sink, limit=DlqLimit(0.9, 10, 5))
    await runner.run(batches(events(*[{"bad": True}] * 6)))
    assert len(crashed) == 1 and isinstance(crashed[0], SystemicFailure)
    assert not sink.sent and not acked
    # Later batches are not acted on either.
    result = await runner.handle(events({"id": "z"}), [raw(0, {"id": "z"})])
    assert result is None and not acked


async def test_an_unexpected_error_in_the_runner_crashes_and_acks_nothing():
    class BrokenSink(ListSink):
        async def send(self, letter):
            raise RuntimeError("broker gone")

    runner, acked, crashed = make_runner(ScriptedStage(), BrokenSink())
    await runner.run(batches(events({"bad": True}, {"id": "b"})))
    assert len(crashed) == 1 and not acked


async def test_a_decoder_that_raises_dead_letters_its_record():
    class Buggy(ScriptedStage):
        def decode(self, record):
            if record[2] == 1:
                raise KeyError("oops")
            return super().decode(record)

    sink = ListSink()
    runner, acked, _ = make_runner(Buggy(), sink)
    await runner.run(batches(events({"id": "a"}, {"id": "b"})))
    (letter,) = sink.sent
    assert letter.header("x-reason") == "decoding failed: KeyError"


async def test_batches_in_flight_are_bounded():
    running = []
    peak = []
    gate = asyncio.Event()

    class Slow(ScriptedStage):
        async def write(self, evs):
            running.append(1)
            peak.append(len(running))
            await gate.wait()
            running.pop()
            return await super().write(evs)

    runner, acked, _ = make_runner(Slow(), in_flight=2)
    task = asyncio.ensure_future(runner.run(batches(*(events({"id": str(i)}) for i in range(5)))))
    await asyncio.sleep(0.05)
    assert max(peak) == 2
    gate.set()
    await task
    assert len(acked) == 5 and max(peak) == 2


class FirstWriteSlow(ScriptedStage):
    """The first batch written takes a while; the others are stored at once."""

    async def write(self, evs):
        if not self.calls:
            self.calls.append([])
            await asyncio.sleep(0.1)
        return await super().write(evs)


def claimed(record):
    """An order key: the ``m`` a fake record claims (its message id)."""
    return orjson.loads(record[4]).get("m")


def ordered_runner(stage, executor=None):
    acked, crashed = [], []

    async def ack(event):
        acked.append(event)

    async def crash(exc):
        crashed.append(exc)

    if executor is None:
        executor = StageExecutor(stage)
        executor.in_flight = 2
    spec = StageSpec("agent", "test", ("t",), lambda s: stage, 0, order_key=claimed)
    runner = StageRunner(spec, executor, ListSink(), SystemicFailureDetector(DEFAULT_LIMIT),
                         hold=lambda e: e.message.incref(), ack=ack, crash=crash)
    return runner, acked, crashed


async def test_a_copy_is_stored_after_the_earlier_copy_in_flight_beside_it():
    # Two batches in flight at once, the first slower: with nothing in common the second
    # is stored first (the runner keeps them overlapping) ...
    stage = FirstWriteSlow()
    runner, acked, _ = ordered_runner(stage)
    await runner.run(batches(events({"id": "a1", "m": "x"}), events({"id": "b1", "m": "y"})))
    assert stage.stored == ["b1", "a1"] and len(acked) == 2
    # ... but when the second holds a copy of a message id the first holds, the first
    # copy is stored first, whichever batch is quicker.
    stage = FirstWriteSlow()
    runner, acked, _ = ordered_runner(stage)
    await runner.run(batches(events({"id": "a1", "m": "x"}, {"id": "a2", "m": "z"}),
                             events({"id": "b1", "m": "y"}, {"id": "b2", "m": "x"})))
    assert stage.stored == ["a1", "a2", "b1", "b2"] and len(acked) == 4


async def test_a_copy_behind_a_batch_that_failed_is_neither_stored_nor_acknowledged():
    stage = ScriptedStage()

    class FirstFails(StageExecutor):
        in_flight = 2
        runs = 0

        async def run(self, raws):
            self.runs += 1
            if self.runs == 1:
                await asyncio.sleep(0.05)
                raise RuntimeError("the fold process is gone")
            return await super().run(raws)

    async def then_wait(*groups):
        async for group in batches(*groups):
            yield group
        await asyncio.sleep(0.2)  # the worker goes on: not stopping when the first fails

    runner, acked, crashed = ordered_runner(stage, FirstFails(stage))
    await runner.run(then_wait(events({"id": "a1", "m": "x"}), events({"id": "b1", "m": "x"})))
    assert stage.stored == [] and acked == [] and len(crashed) == 1


async def test_in_process_executor_builds_its_stage_once():
    built = []

    def factory(settings):
        built.append(1)
        return ScriptedStage()

    executor = InProcessExecutor(load_settings(), factory)
    await executor.start()
    result = await executor.run([raw(0, {"id": "a"}), raw(1, {"bad": True})])
    await executor.run([raw(2, {"id": "b"})])
    assert len(built) == 1 and result.valid == 1 and len(result.invalid) == 1


@pytest.mark.parametrize("code", ["54000", "22P05", "22003", "23505"])
async def test_each_data_fault_kind_goes_to_the_dlq(code):
    stage = ScriptedStage(poison={"x": sql_error(code)})
    sink = ListSink()
    runner, acked, _ = make_runner(stage, sink)
    await runner.run(batches(events({"id": "x"}, {"id": "y"})))
    (letter,) = sink.sent
    assert letter.header("x-reason").startswith(f"data fault: SQLSTATE {code}")
    assert stage.stored == ["y"] and len(acked) == 2


async def test_the_worker_metrics_count_a_batch_its_dead_letters_and_retries():
    from prometheus_client import REGISTRY

    def sample(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    label = {"stage": "test"}
    before = (sample("streams_stage_batch_events_count", **label),
              sample("streams_stage_dead_letters_total", **label, reason="data_fault"),
              sample("streams_stage_dead_letters_total", **label, reason="invalid"),
              sample("streams_stage_retries_total", **label, **{"class": "unavailable"}),
              sample("streams_stage_events_total", **label, outcome="stored"))
    stage = ScriptedStage(script=[sql_error("08006")] * 2,
                          poison={"x": sql_error("54000")})
    runner, _, _ = make_runner(stage)
    await runner.run(batches(events({"id": "a"}, {"id": "x"}, {"bad": True})))
    after = (sample("streams_stage_batch_events_count", **label),
             sample("streams_stage_dead_letters_total", **label, reason="data_fault"),
             sample("streams_stage_dead_letters_total", **label, reason="invalid"),
             sample("streams_stage_retries_total", **label, **{"class": "unavailable"}),
             sample("streams_stage_events_total", **label, outcome="stored"))
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 1, 2, 1]
