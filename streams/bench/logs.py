"""Where the bench's child processes (workers, emitters, the collector) write their logs.

By default nowhere: a bench prints figures, and its children's lines would only cost
disk. With ``STREAMS_BENCH_LOG_DIR`` set (the test suite sets it, to scan those lines for
secrets and people's data like every other log), each child appends to a file of its own
there.
"""

from __future__ import annotations

import itertools
import os
import subprocess
from pathlib import Path
from typing import IO

LOG_DIR_ENV = "STREAMS_BENCH_LOG_DIR"
_numbers = itertools.count(1)


def log_path(role: str) -> Path | None:
    """A new log file's path for a child in ``role``, or None when logs are not kept."""
    folder = os.environ.get(LOG_DIR_ENV)
    if not folder:
        return None
    Path(folder).mkdir(parents=True, exist_ok=True)
    return Path(folder) / f"{role}-{os.getpid()}-{next(_numbers)}.log"


def child_output(role: str) -> IO[bytes] | int:
    """What to give a child as its stdout/stderr: an open log file (close it in the parent
    once the child is started: the child keeps its own copy) or DEVNULL."""
    path = log_path(role)
    return open(path, "ab") if path is not None else subprocess.DEVNULL  # noqa: SIM115


def close_in_parent(output: IO[bytes] | int) -> None:
    if not isinstance(output, int):
        output.close()
