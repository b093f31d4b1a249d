"""Helpers shared by the test suites (fixtures live in the conftest files)."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

# One implementation, shared with the benchmarks that start child processes.
from streams.settings import child_environment as child_env  # noqa: F401

REPO = Path(__file__).resolve().parent.parent

# The test session's profile API tokens and forget key (tests/conftest.py sets them); the
# session's scan of logs and error bodies (tests/leak_scan.py) looks for these.
API_READ_TOKEN = "test-read-6f1d0c9a"
API_FORGET_TOKEN = "test-forget-1b7e44d2"
FORGET_KEY = "test-forget-key-0a5c7d19e3"


def api_auth(scope: str = "read") -> dict[str, str]:
    """Headers that open the profile API with the session's ``read`` or ``forget`` token."""
    token = {"read": API_READ_TOKEN, "forget": API_FORGET_TOKEN}[scope]
    return {"Authorization": f"Bearer {token}"}


def unique(prefix: str = "t") -> str:
    """A short unique name for topics, groups and databases."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def assert_running(proc) -> None:
    """Fail at once, with the end of its log, when a spawned worker has exited."""
    if proc.poll() is not None:
        log = getattr(proc, "log_path", None)
        text = Path(log).read_text(errors="replace")[-3000:] if log else ""
        raise AssertionError(f"worker exited with code {proc.returncode}:\n{text}")


async def eventually(
    check: Callable[[], Awaitable[object]], timeout: float = 30.0, interval: float = 0.2,
    what: str = "condition",
):
    """Await ``check()`` until it returns something truthy; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


@contextlib.contextmanager
def scratch_database(settings):
    """A database of its own on the session's server, dropped afterwards: ``settings``
    pointing at it (for migration tests, which move a whole database up and down)."""
    import psycopg
    from psycopg import sql

    target = settings.database
    name = unique("streams_mig_")
    admin = psycopg.connect(host=target.host, port=target.port, user=target.user,
                            password=target.password, dbname=target.dbname, autocommit=True)
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield settings.model_copy(update={
            "database_url": settings.database_url.__class__(target.with_dbname(name))})
    finally:
        admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
            sql.Identifier(name)))
        admin.close()
