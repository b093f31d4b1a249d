"""What every command module of the ``streams`` CLI shares: the consoles, settings read
with a clean error, and the one-line failure. The command modules (``cli.py`` and each
domain's ``commands.py``) import this module, never each other."""

from __future__ import annotations

import sys
from typing import NoReturn

from pydantic import ValidationError
from rich.console import Console

from streams.settings import Settings, load_settings

# Piped output (CI logs, `| less`) gets wide lines instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def settings_or_exit() -> Settings:
    """The settings from the environment; on a bad value prints one line per field at
    fault (never the value: it may be a secret) and exits with status 2."""
    try:
        return load_settings()
    except ValidationError as exc:
        for error in exc.errors():
            field = "STREAMS_" + "_".join(str(p) for p in error["loc"]).upper()
            err_console.print(f"[red]error:[/red] {field}: {error['msg']}")
        sys.exit(2)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr and exit with ``code``."""
    err_console.print(f"[red]error:[/red] {message}")
    sys.exit(code)
