"""Session-wide fixtures: real Kafka and PostgreSQL through the project's own infra code.

Integration tests get a fresh, migrated database for the session and unique topics and
consumer groups per test. Nothing skips for want of a service: if Kafka or PostgreSQL
cannot be brought up, the session fails.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import psutil
import psycopg
import pytest
from psycopg import sql
from pydantic import SecretStr

from streams.infra.procs import stop_session
from streams.settings import Settings, load_settings
from tests.helpers import API_FORGET_TOKEN, API_READ_TOKEN, FORGET_KEY, child_env, unique


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def infra_settings() -> Settings:
    """Kafka and PostgreSQL up (started by us, or found running); stopped at the end if
    this session started them."""
    from streams.infra import infra_down, infra_up

    settings = load_settings()
    states = infra_up(settings)
    started_here = any(s.started for s in states)
    yield settings
    if started_here and not os.environ.get("STREAMS_TEST_KEEP_INFRA"):
        infra_down(settings)


@pytest.fixture(scope="session")
def session_settings(infra_settings: Settings) -> Settings:
    """Settings pointing at a throwaway database, migrated to head, dropped at the end."""
    from streams import db

    target = infra_settings.database
    dbname = unique("streams_test_")
    admin = psycopg.connect(
        host=target.host, port=target.port, user=target.user, password=target.password,
        dbname=target.dbname, autocommit=True,
    )
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    settings = infra_settings.model_copy(
        update={"database_url": infra_settings.database_url.__class__(target.with_dbname(dbname)),
                # Known credentials: tests send them, and look for them in logs.
                "api_tokens": SecretStr(f"{API_READ_TOKEN}=read,{API_FORGET_TOKEN}=forget"),
                "forget_key": SecretStr(FORGET_KEY)}
    )
    db.upgrade(settings)
    yield settings
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))
    admin.close()


@pytest.fixture
def make_settings(session_settings: Settings):
    """Factory: settings with a unique topic prefix and consumer group, plus overrides."""

    def make(**overrides) -> Settings:
        values = {
            "topic_prefix": unique("t") + ".",
            "consumer_group": unique("g"),
            "topic_partitions": 4,
            "commit_interval": 0.5,
            "batch_seconds": 0.2,
        }
        values.update(overrides)
        return session_settings.model_copy(update=values)

    return make


@pytest.fixture
def spawn_worker(tmp_path):
    """Factory: start ``streams worker`` subprocesses; all are stopped after the test."""
    procs: list[subprocess.Popen] = []

    def spawn(settings: Settings, name: str = "worker") -> subprocess.Popen:
        log = open(tmp_path / f"{name}-{len(procs)}.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"], env=child_env(settings),
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        proc.log_path = tmp_path / f"{name}-{len(procs)}.log"  # type: ignore[attr-defined]
        procs.append(proc)
        return proc

    yield spawn
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # all at once: they stop in parallel
    for proc in procs:
        stop_session(proc)


def _is_infra(proc: psutil.Process) -> bool:
    """The session's Kafka broker and PostgreSQL server are meant to outlive a test."""
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return True
    # multiprocessing's resource tracker is one per process, kept until the interpreter
    # exits (started by the first fold process a test spawns in-process).
    return ("kafka.Kafka" in cmd or "postgres" in proc.name()
            or "multiprocessing.resource_tracker" in cmd)


@pytest.fixture(autouse=True)
def no_leaks():
    """Fail a test that leaves threads or child processes running."""
    threads_before = {t.ident for t in threading.enumerate()}
    yield
    me = psutil.Process()
    leftover = [
        c for c in me.children(recursive=True)
        if c.status() != psutil.STATUS_ZOMBIE and not _is_infra(c)
    ]
    assert not leftover, f"test left processes running: {[p.cmdline()[:4] for p in leftover]}"
    extra = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive()
             and not t.daemon]
    assert not extra, f"test left threads running: {[t.name for t in extra]}"
