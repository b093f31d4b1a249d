"""Helpers shared by the test suites (fixtures live in the conftest files)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

# One implementation, shared with the benchmarks that start child processes.
from streams.settings import child_environment as child_env  # noqa: F401

REPO = Path(__file__).resolve().parent.parent


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
