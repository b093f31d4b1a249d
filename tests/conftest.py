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

from streams.bench.logs import LOG_DIR_ENV
from streams.infra.procs import stop_session
from streams.settings import Settings, load_settings
from tests import leak_scan
from tests.helpers import API_FORGET_TOKEN, API_READ_TOKEN, FORGET_KEY, child_env, unique
from tests.leak_scan import RECORDER, register_settings


def pytest_collection_modifyitems(items):
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


# --- the whole-suite scan for secrets and people's data (tests/leak_scan.py) ------------


def pytest_configure(config):
    if config.option.collectonly:
        return
    RECORDER.start()
    leak_scan.install_hooks(RECORDER)
    # The bench's workers, emitters and collector log there instead of nowhere.
    os.environ[LOG_DIR_ENV] = str(RECORDER.directory / "bench")
    RECORDER.watch(RECORDER.directory / "bench", "bench child")
    from tests import event_strategies, hostile_corpus

    leak_scan.register_person(*event_strategies.PERSON_DATA, *hostile_corpus.PERSON_DATA)
    # The test session's own credentials, known before any settings are made.
    leak_scan.register_secrets([API_READ_TOKEN, API_FORGET_TOKEN, FORGET_KEY])
    config.leak_scan = {"ran": False}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    RECORDER.test = item.nodeid
    yield
    RECORDER.flush_files()  # the test's fixtures have stopped its processes by now
    RECORDER.test = ""


def pytest_runtest_logreport(report):
    # pytest's capture of this process's standard error: children that inherit it (fold
    # processes, commands run without a pipe) write there.
    for name, content in report.sections:
        if name == f"Captured stderr {report.when}" and content:
            RECORDER.add_text("captured stderr", f"stderr during {report.when}", content)


def _whole_suite(session) -> bool:
    """The run was the whole suite: no path narrower than tests/, no -k, -m, deselection
    or --lf, and no test failed (-x stops at the first)."""
    config = session.config
    tests_dir = os.path.dirname(os.path.abspath(__file__))
    args = [os.path.abspath(a.split("::")[0]) for a in config.args]
    narrowed = any(not tests_dir.startswith(a) for a in args)
    selected = config.option.keyword or config.option.markexpr or config.option.deselect \
        or config.getoption("lf", False)
    return not narrowed and not selected and not session.testsfailed


def pytest_sessionfinish(session, exitstatus):
    state = getattr(session.config, "leak_scan", None)
    if state is None or not session.testscollected:
        return
    RECORDER.close()
    hits, coverage = RECORDER.scan()
    problems = leak_scan.coverage_problems(coverage, _whole_suite(session),
                                           spawned=bool(RECORDER.files_registered))
    report = leak_scan.summary(hits, coverage, problems)
    leak_scan.SUMMARY_FILE.parent.mkdir(parents=True, exist_ok=True)
    leak_scan.SUMMARY_FILE.write_text(report)
    state.update(ran=True, report=report, failed=bool(hits or problems))
    if hits or problems:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    state = getattr(config, "leak_scan", None)
    if not state or not state["ran"]:
        return
    title = "leak scan FAILED" if state["failed"] else "leak scan"
    terminalreporter.write_sep("=", title, red=state["failed"], green=not state["failed"])
    terminalreporter.write(state["report"])
    where = leak_scan.SUMMARY_FILE.relative_to(leak_scan.REPO)
    terminalreporter.write_line(f"(summary in {where}; the texts scanned in "
                                f"{leak_scan.SESSION_DIR.relative_to(leak_scan.REPO)}/)")


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
    register_settings(settings)
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
        made = session_settings.model_copy(update=values)
        register_settings(made)
        return made

    return make


@pytest.fixture
def spawn_worker(tmp_path):
    """Factory: start ``streams worker`` subprocesses; all are stopped after the test."""
    procs: list[subprocess.Popen] = []

    def spawn(settings: Settings, name: str = "worker") -> subprocess.Popen:
        log = open(tmp_path / f"{name}-{len(procs)}.log", "wb")
        RECORDER.add_file(tmp_path / f"{name}-{len(procs)}.log", f"streams worker ({name})")
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
