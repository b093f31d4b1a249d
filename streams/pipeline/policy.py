"""One retry and failure policy for every stage, by PostgreSQL SQLSTATE class.

- ``UNAVAILABLE``: the database cannot be reached or is not taking writes (connection
  lost, shutting down, starting, read-only during a failover, out of connections). Waited
  out with backoff for as long as it lasts; nothing is dead-lettered.
- ``TRANSIENT``: the transaction lost a race (serialization failure, deadlock, lock not
  available). Retried with a short backoff for as long as it happens.
- ``DATA``: the event itself cannot be stored (a value too large for an index, a NUL or
  an unsupported escape, a numeric overflow, a constraint; or a value orjson cannot
  write, nested past 255 levels). Never retried: the runner isolates the event at fault
  and dead-letters it. (The event contract's limits refuse such events before they get
  here; this is the net under them.)
- ``UNKNOWN``: anything else (a bug, an unexpected error). Retried a few times, then
  treated like a data fault, so one bad event never blocks its partition.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

import orjson
import psycopg
import tenacity
from sqlalchemy.exc import DBAPIError

log = logging.getLogger(__name__)

T = TypeVar("T")


class FailureClass(enum.Enum):
    UNAVAILABLE = "unavailable"
    TRANSIENT = "transient"
    DATA = "data_fault"
    UNKNOWN = "failed"


# SQLSTATE classes (first two characters) and codes, from PostgreSQL's errcodes table.
_UNAVAILABLE_CLASSES = {"08", "53", "57", "58"}  # connection, resources, operator, system
_UNAVAILABLE_CODES = {"25006"}  # read_only_sql_transaction: a standby during failover
_TRANSIENT_CODES = {"40001", "40P01", "55P03"}  # serialization, deadlock, lock not available
_DATA_CLASSES = {"22", "23"}  # data exception, integrity constraint violation
_DATA_CODES = {"54000", "54001", "54011", "54023"}  # program limits: index row, statement
_SQLSTATE_NAMES = {
    "54000": "program_limit_exceeded", "22P05": "untranslatable_character",
    "22021": "character_not_in_repertoire", "22003": "numeric_value_out_of_range",
    "22001": "string_data_right_truncation", "23505": "unique_violation",
    "23514": "check_violation", "23502": "not_null_violation",
    "22007": "invalid_datetime_format", "22008": "datetime_field_overflow",
}


def _driver_error(exc: BaseException) -> BaseException:
    """The DBAPI (psycopg) error behind a SQLAlchemy wrapper, or ``exc`` itself."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        return exc.orig
    return exc


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a database error (wrapped or not), or None."""
    return getattr(_driver_error(exc), "sqlstate", None)


def classify(exc: BaseException) -> FailureClass:
    """The class of a failure of a batch write (see the module docstring)."""
    code = sqlstate(exc)
    if code:
        if code[:2] in _UNAVAILABLE_CLASSES or code in _UNAVAILABLE_CODES:
            return FailureClass.UNAVAILABLE
        if code in _TRANSIENT_CODES:
            return FailureClass.TRANSIENT
        if code[:2] in _DATA_CLASSES or code in _DATA_CODES:
            return FailureClass.DATA
        return FailureClass.UNKNOWN
    inner = _driver_error(exc)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return FailureClass.UNAVAILABLE
    # psycopg refuses some values before sending them (a NUL in a text parameter): the
    # data's fault, with no SQLSTATE because the server never saw it.
    if isinstance(inner, psycopg.DataError):
        return FailureClass.DATA
    # Serializing the event's own values failed (too deep, an integer past 64 bits):
    # writing it again cannot succeed.
    if isinstance(inner, orjson.JSONEncodeError | UnicodeEncodeError):
        return FailureClass.DATA
    if isinstance(inner, psycopg.OperationalError | psycopg.InterfaceError):
        return FailureClass.UNAVAILABLE
    if isinstance(inner, ConnectionError | OSError | TimeoutError):
        return FailureClass.UNAVAILABLE
    return FailureClass.UNKNOWN


def _sqlstate_name(code: str) -> str:
    if code in _SQLSTATE_NAMES:
        return _SQLSTATE_NAMES[code]
    try:
        return psycopg.errors.lookup(code).__name__
    except KeyError:
        return ""


def describe(exc: BaseException) -> str:
    """A reason for a dead letter or a log line that names the failure without the
    event's data: the SQLSTATE and its name, with the server's primary message except
    for data exceptions (class 22, whose messages quote the value: ``invalid input
    syntax for type integer: "..."``); never the statement or its parameters. For other
    errors, the exception's type."""
    inner = _driver_error(exc)
    code = sqlstate(exc)
    if code:
        diag = getattr(inner, "diag", None)
        primary = "" if code.startswith("22") else \
            (getattr(diag, "message_primary", None) or "")
        name = _sqlstate_name(code)
        label = f"SQLSTATE {code}" + (f" {name}" if name else "")
        return f"{label}: {primary}" if primary else label
    if isinstance(inner, psycopg.DataError):
        # psycopg's own message names the problem ("...cannot contain NUL (0x00) bytes").
        return f"{type(inner).__name__}: {str(inner).splitlines()[0][:200]}"
    return type(inner).__name__


class RetryPolicy:
    """How long and how often a batch write is retried (see the module docstring).

    ``tries`` bounds UNKNOWN failures (the first try included); UNAVAILABLE and
    TRANSIENT are retried without bound (the partition waits; the worker's stop kills a
    batch stuck that way, whose offsets were never committed). ``on_retry(failure_class)``
    is called before each wait.
    """

    def __init__(self, tries: int = 3, initial: float = 0.5, maximum: float = 15.0,
                 on_retry: Callable[[FailureClass], None] | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep):
        self.sleep = sleep
        self.tries = max(1, tries)
        self.initial = initial
        self.maximum = maximum
        self.on_retry = on_retry

    def _should_stop(self, state: tenacity.RetryCallState) -> bool:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return True
        cls = classify(exc)
        if cls in (FailureClass.UNAVAILABLE, FailureClass.TRANSIENT):
            return False
        return cls is FailureClass.DATA or state.attempt_number >= self.tries

    def _wait(self, state: tenacity.RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        cls = classify(exc) if exc is not None else FailureClass.UNKNOWN
        if cls is FailureClass.UNAVAILABLE:
            return min(self.initial * 2 ** (state.attempt_number - 1), self.maximum)
        return min(0.05 * state.attempt_number, 1.0)

    def _before_sleep(self, state: tenacity.RetryCallState,
                      observer: Callable[[FailureClass], None] | None = None) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is None:
            return
        cls = classify(exc)
        wait = state.next_action.sleep if state.next_action else 0.0
        if cls is FailureClass.UNAVAILABLE:
            log.warning("database unavailable (%s); retrying in %.1fs", describe(exc), wait)
        else:
            log.warning("batch write failed (%s, %s); retry %d in %.2fs", cls.value,
                        describe(exc), state.attempt_number, wait)
        for callback in (self.on_retry, observer):
            if callback is not None:
                callback(cls)

    async def call(self, write: Callable[[], Awaitable[T]],
                   on_retry: Callable[[FailureClass], None] | None = None) -> T:
        """Run ``write`` under this policy; raises the last failure when it gives up
        (a data fault at once, an unknown failure after ``tries``). Blocks while the
        database is unavailable. ``on_retry`` is called, besides the policy's own, with
        the class of each failure about to be retried."""
        retrying = tenacity.AsyncRetrying(
            stop=self._should_stop, wait=self._wait,
            before_sleep=lambda state: self._before_sleep(state, on_retry),
            retry=tenacity.retry_if_exception_type(Exception), reraise=True,
            sleep=self.sleep)
        async def attempt() -> T:  # a coroutine function, as tenacity tells them apart
            return await write()

        return await retrying(attempt)
