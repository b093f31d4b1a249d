"""Exceptions described for a log line without the data they may quote.

An unexpected error's message can carry a person's data: PostgreSQL's ``DETAIL`` names the
key that clashed, ``invalid input syntax`` quotes the value, a ``KeyError`` is its key. Log
lines must name what failed and where, never that data, so the stages log
``describe_failure(exc)``: each exception of the chain by its type (and SQLSTATE for a
database error), and the frames it passed through (file, line, function), without any message.
"""

from __future__ import annotations

import traceback

# Frames shown per exception: the innermost ones, where it was raised.
FRAMES = 8


def _sqlstate(exc: BaseException) -> str | None:
    orig = getattr(exc, "orig", None)  # SQLAlchemy's wrapper of the driver's error
    return getattr(orig, "sqlstate", None) or getattr(exc, "sqlstate", None)


def _name(exc: BaseException) -> str:
    name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    code = _sqlstate(exc)
    return f"{name} (SQLSTATE {code})" if code else name


def describe_failure(exc: BaseException) -> str:
    """``exc`` and its causes by type, SQLSTATE and frames; never their messages."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.extract_tb(current.__traceback__)[-FRAMES:]
        where = "; ".join(f"{f.filename.rsplit('/', 2)[-2:][-1]}:{f.lineno} {f.name}"
                          for f in frames)
        parts.append(f"{_name(current)}" + (f" at {where}" if where else ""))
        current = current.__cause__ or (None if current.__suppress_context__
                                        else current.__context__)
    return " <- ".join(parts)
