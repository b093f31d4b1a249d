"""Failures logged without the data their messages quote (``streams.errors``)."""

from __future__ import annotations

import psycopg
from sqlalchemy.exc import IntegrityError

from streams.errors import describe_failure


def _raise_clash() -> None:
    lookup: dict[str, int] = {}
    try:
        lookup["email:ann@example.test"]
    except KeyError as exc:
        raise ValueError("no profile for ann@example.test") from exc


def test_a_failure_is_named_by_type_and_place_never_by_its_message():
    try:
        _raise_clash()
    except ValueError as exc:
        text = describe_failure(exc)
    assert "ann@example.test" not in text
    assert text.startswith("builtins.ValueError at ")
    assert "test_errors.py:" in text and "_raise_clash" in text
    assert " <- builtins.KeyError at " in text  # the cause, also without its key


def test_a_database_error_keeps_its_sqlstate_and_loses_its_detail():
    orig = psycopg.errors.UniqueViolation(
        'duplicate key value violates unique constraint "pk"\n'
        "DETAIL:  Key (identifier)=(email:ann@example.test) already exists.")
    wrapped = IntegrityError("INSERT ...", {"identifier": "email:ann@example.test"}, orig)
    text = describe_failure(wrapped)
    assert "ann@example.test" not in text and "INSERT" not in text
    assert text == "sqlalchemy.exc.IntegrityError (SQLSTATE 23505)"
