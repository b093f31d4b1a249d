"""Fakes of the runner's collaborators: a stage, a dead-letter sink, Faust events."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson
import psycopg

from streams.events.models import DeadLetter, InvalidRecord


def sql_error(sqlstate: str, message: str = "failed") -> Exception:
    """A server error with ``sqlstate`` as SQLAlchemy raises it (psycopg's own class for
    the code, wrapped in SQLAlchemy's DBAPIError subclass), with parameters that must
    never reach a log or a dead letter."""
    from sqlalchemy.exc import DBAPIError

    orig = psycopg.errors.lookup(sqlstate)(message)
    return DBAPIError.instance("INSERT INTO t VALUES (%(v)s)", {"v": "secret@example.com"},
                               orig, psycopg.Error)


class ListSink:
    """Dead letters kept in a list."""

    def __init__(self):
        self.sent: list[DeadLetter] = []

    async def send(self, letter: DeadLetter) -> None:
        self.sent.append(letter)


class ScriptedStage:
    """Decodes JSON records with an ``id``; a record with ``bad`` is invalid. ``write``
    first raises each error in ``script`` (one per call), then fails every batch holding
    an id in ``poison`` with that id's error, and stores the rest."""

    def __init__(self, script: list[BaseException] | None = None,
                 poison: dict[str, BaseException] | None = None):
        self.script = list(script or [])
        self.poison = poison or {}
        self.calls: list[list[str]] = []
        self.stored: list[str] = []

    def decode(self, record):
        topic, partition, offset, key, value = record[:5]
        doc = orjson.loads(value)
        if doc.get("bad"):
            return InvalidRecord(topic, partition, offset, key, value, "/bad: is set", "/bad")
        return doc["id"]

    async def write(self, events):
        self.calls.append(list(events))
        if self.script:
            raise self.script.pop(0)
        for event in events:
            if event in self.poison:
                raise self.poison[event]
        self.stored.extend(events)
        return len(events)

    async def close(self):
        pass


def raw(offset: int, doc: dict, topic: str = "t.events.view", partition: int = 0):
    return (topic, partition, offset, b"k", orjson.dumps(doc))


@dataclass
class FakeMessage:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    refs: int = 0
    timestamp: float | None = None  # Kafka's record time (faust's Message has it)

    def incref(self):
        self.refs += 1


@dataclass
class FakeEvent:
    message: FakeMessage
    acked: bool = field(default=False)


def events(*docs: dict) -> list[FakeEvent]:
    return [FakeEvent(FakeMessage(*raw(i, d))) for i, d in enumerate(docs)]
