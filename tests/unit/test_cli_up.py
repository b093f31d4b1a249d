"""`streams up` stopping its parts (the whole command runs in tests/integration/test_up.py)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from streams import cli

STUBBORN = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); " \
           "print('ready', flush=True); time.sleep(60)"


@pytest.fixture
def own_signal_handlers():
    # Once it kills, _stop_parts ignores SIGINT/SIGTERM (up exits next); pytest gets its back.
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_stop_parts_terminates_then_kills_what_outlives_the_grace(monkeypatch,
                                                                   own_signal_handlers):
    monkeypatch.setattr(cli, "STOP_GRACE", 1.0)
    polite = subprocess.Popen(["sleep", "60"])
    stubborn = subprocess.Popen([sys.executable, "-c", STUBBORN], stdout=subprocess.PIPE,
                                text=True)
    assert stubborn.stdout.readline() == "ready\n"  # its SIGTERM is ignored from here on
    done = subprocess.Popen(["true"])
    done.wait()
    started = time.monotonic()
    cli._stop_parts([("polite", polite), ("stubborn", stubborn), ("done", done)])
    assert polite.returncode == -signal.SIGTERM
    assert stubborn.returncode == -signal.SIGKILL
    assert done.returncode == 0
    assert 1.0 <= time.monotonic() - started < 10
    stubborn.stdout.close()
