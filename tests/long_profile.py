"""How much the property tests draw: the short profile CI runs, or the long one a person
runs before a release (``make test-long`` sets ``STREAMS_TEST_LONG=1``): many more
examples, larger logs, three workers in the pipeline."""

from __future__ import annotations

import os

LONG = os.environ.get("STREAMS_TEST_LONG") == "1"


def examples(short: int, long: int) -> int:
    """Examples of a property test in the profile being run."""
    return long if LONG else short


def log_size(short: int, long: int) -> int:
    """Largest number of random events in a drawn log."""
    return long if LONG else short


WORKER_COUNTS = [1, 2, 3] if LONG else [1, 2]
