"""Fixtures of the fault suite."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest


@pytest.fixture
def private_data_dir():
    """A data folder for a private Kafka and PostgreSQL, outside pytest's temporary base:
    PostgreSQL runs as another user when the tests run as root and needs to traverse the
    folder's parents, and every pytest session starting on the machine resets its base
    folder to 0700."""
    path = Path(tempfile.mkdtemp(prefix="streams-faults-"))
    path.chmod(0o755)
    yield path / "data"
    shutil.rmtree(path, ignore_errors=True)


# The collector in this process, as the ingestion tests start it.
from tests.integration.ingest.conftest import start_collector  # noqa: E402, F401
