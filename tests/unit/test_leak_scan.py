"""The whole-suite scan (tests/leak_scan.py) can fail: a secret or a person's data in a
log line or an error body is a hit, named by source and test, never printed; clean text
passes; a run that read too little fails too."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from tests import leak_scan
from tests.leak_scan import Coverage, Recorder, Registry, coverage_problems, scan_text

TOKEN = "tok-7c1e9b0a55d2"


@pytest.fixture
def registry() -> Registry:
    made = Registry()
    made.add_secret(TOKEN)
    made.add_person("+33 6 12 34 56 78")
    return made


def test_a_secret_and_a_persons_email_in_log_lines_are_hits(registry):
    text = (f"INFO streams.api: refused token {TOKEN}\n"
            "WARNING streams.fold: row for ann.r00042@example.test failed\n"
            "ERROR streams.worker: phone +33 6 12 34 56 78 and +4915551234567\n")
    hits = scan_text(text, registry, "worker.log", "tests/x.py::test_y")
    found = [(h.kind, h.line) for h in hits]
    assert found == [("secret", 1), ("person data", 2), ("person data", 3),
                     ("person data", 3)]
    report = leak_scan.summary(hits, Coverage(), [])
    for hit in hits:
        assert hit.source == "worker.log" and hit.test == "tests/x.py::test_y"
    # Where, and a redacted form only: never the value itself.
    assert TOKEN not in report and "ann.r00042@example.test" not in report
    assert "+4915551234567" not in report and "12 34 56 78" not in report
    assert "worker.log line 1" in report and "'to'...(16 chars" in report


def test_clean_log_lines_and_error_bodies_pass(registry):
    text = ("INFO streams.worker: fold_events_into_profiles: 120 events, 3 dead-lettered\n"
            '{"error": "/traits/email: longer than 512 characters (max_identifier_chars)", '
            '"field": "/traits/email"}\n'
            "postgresql+psycopg://streams:***@127.0.0.1:5432/streams_test_ab12 unavailable\n"
            "ERROR identifier must be TYPE:VALUE, e.g. email:ann@example.com\n"
            "[2026-12-02 10:00:00,000+00:00] offset 123456789012 of t.events.click\n")
    assert scan_text(text, registry) == []


def test_the_recorder_scans_log_records_files_stderr_and_error_bodies(tmp_path):
    recorder = Recorder(tmp_path / "scan")
    recorder.start()
    recorder.registry.add_secret(TOKEN)
    recorder.test = "tests/unit/test_leak_scan.py::t"
    logger = logging.getLogger("leak-scan-test")
    logger.addHandler(recorder.handler)
    logger.propagate = False  # not into the session's own scan: this token is a decoy
    try:
        try:
            raise ValueError(f"bad token {TOKEN}")
        except ValueError:
            logger.exception("request failed")  # the secret is in the traceback only
    finally:
        logger.removeHandler(recorder.handler)
        logger.propagate = True
    log = tmp_path / "worker-0.log"
    log.write_text("INFO started\nINFO identify for bob@example.test\n")
    recorder.add_file(log, "streams worker")
    recorder.add_file(tmp_path / "never-written.log", "streams serve")
    recorder.add_text("http error body", "404 GET /v1/profiles", b'{"error": "not found"}')
    recorder.close()
    hits, coverage = recorder.scan()
    assert sorted((h.kind, h.source) for h in hits) == [
        ("person data", "subprocess log: streams worker"),
        ("secret", "pytest log: logger leak-scan-test")]
    assert all(h.test == "tests/unit/test_leak_scan.py::t" for h in hits)
    assert coverage.sources["subprocess log"] == 1 and coverage.lines["subprocess log"] == 2
    assert coverage.sources["http error body"] == 1
    assert coverage.missing == ["streams serve (tests/unit/test_leak_scan.py::t)"]


def test_a_run_that_read_too_little_fails():
    empty = Coverage()
    assert coverage_problems(empty, whole_suite=False, spawned=False) == []
    assert coverage_problems(empty, whole_suite=False, spawned=True) == [
        "tests started workers or servers, yet no subprocess log was read"]
    problems = coverage_problems(empty, whole_suite=True, spawned=True)
    assert any("0 subprocess log sources" in p for p in problems)
    assert any("0 http error body sources" in p for p in problems)
    assert any("0 pytest log lines" in p for p in problems)
    enough = Coverage()
    for kind, measure, floor in leak_scan.FLOORS:
        getattr(enough, measure)[kind] = floor
    assert coverage_problems(enough, whole_suite=True, spawned=True) == []


async def test_the_session_hooks_see_subprocess_stderr_and_error_bodies():
    """The session's recorder is installed (tests/conftest.py): a command's standard error
    and a 4xx body reach it; the command's standard output (what a test asked for) and a
    200 body do not."""
    marker = "leak-scan-hook-check"
    done = subprocess.run([sys.executable, "-c", "import sys; print(sys.argv[1] + '-out'); "  # noqa: ASYNC221
                           "print(sys.argv[1] + '-err', file=sys.stderr)", marker],
                          capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"{marker}-out"

    async def answer(request: web.Request) -> web.Response:
        status = int(request.query["status"])
        return web.json_response({"said": f"{marker}-{status}"}, status=status)

    app = web.Application()
    app.router.add_get("/", answer)
    async with TestClient(TestServer(app)) as client:
        for status in (200, 404, 503):
            resp = await client.get("/", params={"status": status})
            assert (await resp.json())["said"] == f"{marker}-{status}"
        async with client.get("/", params={"status": 401}) as resp:
            assert resp.status == 401  # its body never read by the test: scanned anyway
    records = (leak_scan.SESSION_DIR / "records.jsonl").read_text()
    assert f"{marker}-err" in records and f"{marker}-out" not in records
    assert f"{marker}-404" in records and f"{marker}-503" in records
    assert f"{marker}-401" in records
    assert f"{marker}-200" not in records
