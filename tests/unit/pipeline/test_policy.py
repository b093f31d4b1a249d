"""Failure classes by SQLSTATE, and the retry policy built on them."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy.exc import DBAPIError

from streams.pipeline.policy import FailureClass, RetryPolicy, classify, describe
from tests.unit.pipeline.fakes import sql_error


@pytest.mark.parametrize(("code", "expected"), [
    ("08006", FailureClass.UNAVAILABLE),  # connection failure
    ("57P01", FailureClass.UNAVAILABLE),  # admin shutdown
    ("57P03", FailureClass.UNAVAILABLE),  # cannot connect now (starting up)
    ("53300", FailureClass.UNAVAILABLE),  # too many connections
    ("25006", FailureClass.UNAVAILABLE),  # read-only transaction (failover)
    ("40001", FailureClass.TRANSIENT),  # serialization failure
    ("40P01", FailureClass.TRANSIENT),  # deadlock
    ("54000", FailureClass.DATA),  # index row too large
    ("22P05", FailureClass.DATA),  # untranslatable character (\u0000 in jsonb)
    ("22003", FailureClass.DATA),  # numeric value out of range
    ("23505", FailureClass.DATA),  # unique violation
    ("23514", FailureClass.DATA),  # check violation
    ("42601", FailureClass.UNKNOWN),  # syntax error: our bug, not the data's
])
def test_classify_by_sqlstate_not_by_python_type(code, expected):
    assert classify(sql_error(code)) is expected
    assert classify(sql_error(code).orig) is expected  # unwrapped as well


def test_program_limit_is_a_data_fault_although_sqlalchemy_calls_it_operational():
    # The bug this policy replaces: OperationalError was taken for "database down".
    exc = sql_error("54000")
    assert type(exc).__name__ == "OperationalError"
    assert classify(exc) is FailureClass.DATA


def test_errors_without_sqlstate():
    assert classify(ConnectionRefusedError()) is FailureClass.UNAVAILABLE
    assert classify(psycopg.OperationalError("connection refused")) is FailureClass.UNAVAILABLE
    nul = psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
    assert classify(nul) is FailureClass.DATA
    wrapped = DBAPIError.instance("SELECT 1", {}, psycopg.OperationalError("gone"),
                                  psycopg.Error, connection_invalidated=True)
    assert classify(wrapped) is FailureClass.UNAVAILABLE
    assert classify(ValueError("bug")) is FailureClass.UNKNOWN


def test_describe_names_the_failure_never_the_statement_or_parameters():
    text = describe(sql_error("54000", "index row size 3016 exceeds maximum 2712"))
    assert text.startswith("SQLSTATE 54000 program_limit_exceeded")
    assert "secret@example.com" not in text and "INSERT" not in text
    assert describe(ValueError("secret@example.com")) == "ValueError"


class Calls:
    def __init__(self, *errors):
        self.errors = list(errors)
        self.count = 0

    async def __call__(self):
        self.count += 1
        if self.errors:
            raise self.errors.pop(0)
        return "stored"


async def no_wait(_seconds):
    return None


async def test_unavailable_and_transient_are_retried_for_as_long_as_they_last():
    seen = []
    policy = RetryPolicy(tries=2, on_retry=seen.append, sleep=no_wait)
    write = Calls(*[sql_error("57P01")] * 10, *[sql_error("40P01")] * 5)
    assert await policy.call(write) == "stored"
    assert write.count == 16
    assert seen.count(FailureClass.UNAVAILABLE) == 10 and seen.count(FailureClass.TRANSIENT) == 5


async def test_a_data_fault_is_not_retried():
    write = Calls(sql_error("54000"))
    with pytest.raises(DBAPIError):
        await RetryPolicy(tries=5, sleep=no_wait).call(write)
    assert write.count == 1


async def test_an_unknown_failure_is_tried_a_bounded_number_of_times():
    write = Calls(*[ValueError("bug")] * 10)
    with pytest.raises(ValueError):
        await RetryPolicy(tries=3, sleep=no_wait).call(write)
    assert write.count == 3


async def test_backoff_while_unavailable_grows_to_its_cap():
    waits = []

    async def record(seconds):
        waits.append(seconds)

    write = Calls(*[sql_error("08006")] * 8)
    await RetryPolicy(initial=0.5, maximum=4.0, sleep=record).call(write)
    assert waits == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]


def test_data_exceptions_are_described_without_the_servers_message_which_quotes_values():
    # PostgreSQL's class-22 messages quote the input: 'invalid input syntax for type
    # integer: "secret@example.com"'.
    text = describe(sql_error("22P02", 'invalid input syntax for type integer: '
                                       '"secret@example.com"'))
    assert text == "SQLSTATE 22P02 InvalidTextRepresentation"
    assert describe(sql_error("22P05")) == "SQLSTATE 22P05 untranslatable_character"


def test_values_that_cannot_be_serialized_are_the_events_fault():
    import orjson

    deep: list = []
    for _ in range(300):
        deep = [deep]
    with pytest.raises(orjson.JSONEncodeError) as too_deep:
        orjson.dumps(deep)
    assert classify(too_deep.value) is FailureClass.DATA
    with pytest.raises(orjson.JSONEncodeError) as too_big:
        orjson.dumps(2**70)
    assert classify(too_big.value) is FailureClass.DATA
