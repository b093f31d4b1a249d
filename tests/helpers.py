"""Helpers shared by the test suites (fixtures live in the conftest files)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from pydantic import SecretStr

from streams.settings import Settings

REPO = Path(__file__).resolve().parent.parent


def unique(prefix: str = "t") -> str:
    """A short unique name for topics, groups and databases."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def settings_env(settings: Settings) -> dict[str, str]:
    """The STREAMS_* environment that reproduces ``settings`` in a child process."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        # --- ops: optional settings stay unset; tuples travel comma-separated ---------
        if value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        # --- end ops ----------------------------------------------------------------
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in value.items())
        elif isinstance(value, Path):
            value = str(value.resolve())
        env[f"STREAMS_{name.upper()}"] = str(value)
    return env


def child_env(settings: Settings) -> dict[str, str]:
    """The current environment with every STREAMS_* replaced by ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    return {**base, **settings_env(settings), "PYTHONUNBUFFERED": "1"}


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
