"""Prometheus's own lint (`promtool check metrics`) for the tests of a /metrics exposition.

promtool comes with Debian's ``prometheus`` package, which `make deps` installs; the tests
fail, never skip, when it is missing, so that CI cannot pass without the lint.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest


def promtool_findings(exposition: bytes) -> str:
    """What ``promtool check metrics`` says about ``exposition`` ("" when it is clean).
    Fails the calling test when promtool is not installed. Blocks (a subprocess)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed (Debian package prometheus): run `make deps` "
                    "as root, or `sudo make deps`", pytrace=False)
    done = subprocess.run([promtool, "check", "metrics"], input=exposition,
                          capture_output=True, timeout=60, check=False)
    findings = (done.stdout + done.stderr).decode(errors="replace").strip()
    if done.returncode and not findings:
        findings = f"promtool exited with code {done.returncode}"
    return findings
