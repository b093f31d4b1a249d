"""The profile stage's adapter logic: DLQ routing, retries, never blocking, never
dropping while the database is down (store and DLQ are fakes: no broker needed)."""

from __future__ import annotations

import orjson
import pytest
from sqlalchemy.exc import OperationalError

from streams.profiles import agents, folder
from streams.profiles.folder import Consumed, decode, write_with_retry
from streams.profiles.store import BatchOutcome


class FakeDLQ:
    def __init__(self):
        self.sent = []

    async def send(self, key, value, headers):
        self.sent.append((key, value, headers))

        async def ack():
            return None

        return ack()


class FlakyStore:
    """Fails ``db_down`` times with a connection error, then ``bad`` events always fail."""

    def __init__(self, db_down: int = 0, bad: set[str] | None = None):
        self.db_down = db_down
        self.bad = bad or set()
        self.calls = 0
        self.written: list[str] = []

    async def write_batch(self, events):
        self.calls += 1
        if self.db_down:
            self.db_down -= 1
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("down"))
        if any(e.message_id in self.bad for e in events):
            raise ValueError("cannot fold this event")
        self.written.extend(e.message_id for e in events)
        return BatchOutcome(applied=len(events))


def record(offset: int, doc: dict | bytes) -> Consumed:
    value = doc if isinstance(doc, bytes) else orjson.dumps(doc)
    return Consumed("t.events.view", 2, offset, b"k", value)


def page(mid: str) -> dict:
    return {"type": "page", "messageId": mid, "anonymousId": "a", "name": "Home",
            "timestamp": "2026-03-01T10:00:00Z"}


async def process_batch(store, records, dlq, retries):
    """The agent's batch step as ``finish`` runs it: fold (validate, store), then
    dead-letter what could not be stored."""
    raws = [(r.topic, r.partition, r.offset, r.key, r.value) for r in records]
    result = await folder.fold_batch(store, raws, retries)
    for err in (*result.invalid, *result.failed):
        await agents.dead_letter(dlq, err)
    return result


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch):
    async def instant(_seconds):
        return None

    monkeypatch.setattr(folder.asyncio, "sleep", instant)


async def test_undecodable_record_goes_to_the_dlq_with_where_and_why():
    dlq, store = FakeDLQ(), FlakyStore()
    await process_batch(store, [record(7, b"{not json"), record(8, page("m1"))], dlq, 3)
    assert store.written == ["m1"]
    (key, value, headers), = dlq.sent
    headers = dict(headers)
    assert key == b"k" and orjson.loads(value)["raw"] == "{not json"
    assert headers["x-origin"] == b"processing"
    assert headers["x-original-topic"] == b"t.events.view"
    assert headers["x-original-partition"] == b"2"
    assert headers["x-original-offset"] == b"7"
    assert headers["x-reason"].startswith(b"value is not JSON")


async def test_database_down_is_waited_out_never_dropped():
    dlq, store = FakeDLQ(), FlakyStore(db_down=7)
    await process_batch(store, [record(1, page("m1")), record(2, page("m2"))], dlq, 3)
    assert store.written == ["m1", "m2"] and not dlq.sent
    assert store.calls == 8


async def test_a_failing_event_is_retried_then_dead_lettered_alone():
    dlq, store = FakeDLQ(), FlakyStore(bad={"m2"})
    await process_batch(store, [record(1, page("m1")), record(2, page("m2")),
                                record(3, page("m3"))], dlq, 3)
    assert store.written == ["m1", "m3"]
    (_, _, headers), = dlq.sent
    headers = dict(headers)
    assert headers["x-original-offset"] == b"2"
    assert b"processing failed: ValueError: cannot fold this event" == headers["x-reason"]
    # 3 tries of the whole batch, then each event alone (3 tries for the bad one)
    assert store.calls == 3 + 1 + 3 + 1


async def test_write_with_retry_raises_after_its_tries():
    with pytest.raises(ValueError):
        await write_with_retry(FlakyStore(bad={"m1"}), [decode(record(1, page("m1")))],
                               retries=2)
