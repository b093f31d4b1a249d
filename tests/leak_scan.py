"""The whole-suite scan for secrets and people's data in log lines and error bodies
(issue 14, item 6.9).

What is collected, for every test, under ``test-artifacts/leak-scan/`` (``Recorder``):
- every log record of the pytest process, formatted with its exception text (a root
  handler, from the start of the session to its end);
- every log file of a subprocess a test starts and registers (``streams worker``,
  ``streams serve``, the logs of ``streams up``), copied when the test ends;
- the standard error of every subprocess a test runs and reads (``subprocess.run`` and
  ``communicate`` with ``stderr=PIPE``, synchronous or asyncio): CLI runs, Kafka tools;
- the standard error of the pytest process as pytest captured it per test (fold processes
  and children that inherit it write there);
- every 4xx/5xx body the tests read from an HTTP server (aiohttp, requests, urllib):
  the collector, the profile API, the person page API, ops.

Not collected, by the rule "log lines and error bodies only": 2xx bodies (a profile
returned to an authorized caller, the person page), the standard output of a command a
test asks for (``streams profile get`` printing a profile, ``streams up`` printing its
token), and what tests send.

What is looked for (``Registry``): the secrets of the settings in use (``secrets_of``:
API tokens, write keys, the forget key, the ops token, a database password other than
the public local default), registered by the fixtures that make settings and by
``streams up``'s test; people's data: every email address at a ``.test`` domain (the
reserved TLD all test people live under: the canary shape), every E.164 phone number,
and the exact values the test data modules declare (``PERSON_DATA`` of
tests/event_strategies.py and tests/hostile_corpus.py) or a test registers.

At the session's end (tests/conftest.py) the suite fails on any hit, naming the source
and the test with the value redacted, and fails too when it scanned too little to mean
anything (``coverage_problems``). The summary goes to ``test-artifacts/leak-scan.txt``
and the terminal.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import re
import shutil
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
# One folder a session (two sessions in one tree must not clear each other's).
SCAN_ROOT = ARTIFACTS / "leak-scan"
SESSION_DIR = SCAN_ROOT / f"session-{os.getpid()}"
SUMMARY_FILE = ARTIFACTS / "leak-scan.txt"

# A test's address at a reserved testing TLD (RFC 2606): every person the tests make.
EMAIL = re.compile(r"[A-Za-z0-9._%+'-]+@(?:[A-Za-z0-9-]+\.)+test\b", re.IGNORECASE)
# An E.164 number, as people's phones are written in events.
PHONE = re.compile(r"(?<![\w+])\+\d{8,15}(?!\d)")
# Exact values shorter than this would match everywhere ("ann", "@Bob"); they are left to
# the patterns above.
MIN_VALUE_CHARS = 6
# Public values that are no secret: the local database password (also a logger's name).
PUBLIC = frozenset({"", "streams"})


def redact(value: str) -> str:
    """A value shown without giving it away: two characters, its length, a hash prefix."""
    digest = hashlib.sha256(value.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{value[:2]!r}...({len(value)} chars, sha256 {digest})"


@dataclass
class Registry:
    """The values that must never appear: secrets and people's data."""

    secrets: set[str] = field(default_factory=set)
    person_values: set[str] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _compiled: re.Pattern | None = field(default=None, repr=False)

    def add_secret(self, value: str | None) -> None:
        if value and value not in PUBLIC and len(value) >= 4:
            with self._lock:
                if value not in self.secrets:
                    self.secrets.add(value)
                    self._compiled = None

    def add_person(self, value: object) -> None:
        if isinstance(value, str) and len(value.strip()) >= MIN_VALUE_CHARS:
            with self._lock:
                if value not in self.person_values:
                    self.person_values.add(value)
                    self._compiled = None

    def _pattern(self) -> re.Pattern:
        with self._lock:
            if self._compiled is None:
                # Longest first: a secret inside a longer one is reported as the longer.
                values = sorted(self.secrets | self.person_values, key=len, reverse=True)
                alternatives = [re.escape(v) for v in values] or ["(?!x)x"]
                self._compiled = re.compile("|".join(alternatives))
            return self._compiled

    def find(self, text: str) -> Iterator[tuple[str, str]]:
        """Every (kind, value) in ``text``: kind ``secret`` or ``person data``."""
        for match in self._pattern().finditer(text):
            value = match.group()
            yield ("secret" if value in self.secrets else "person data"), value
        for pattern in (EMAIL, PHONE):
            for match in pattern.finditer(text):
                yield "person data", match.group()


@dataclass(frozen=True)
class Hit:
    """One value found: where (source, test, line) and what kind, never the value."""

    kind: str
    source: str
    test: str
    line: int
    redacted: str

    def __str__(self) -> str:
        return f"{self.kind} {self.redacted} in {self.source} line {self.line} " \
               f"(test {self.test or '<session>'})"


def scan_text(text: str, registry: Registry, source: str = "text", test: str = "",
              first_line: int = 1) -> list[Hit]:
    """The hits in ``text`` (each line scanned; values redacted)."""
    hits = []
    for number, line in enumerate(text.splitlines(), start=first_line):
        seen = set()
        for kind, value in registry.find(line):
            if value not in seen:
                seen.add(value)
                hits.append(Hit(kind, source, test, number, redact(value)))
    return hits


@dataclass
class Coverage:
    """How much the scan read, by kind of source."""

    lines: Counter = field(default_factory=Counter)  # kind -> lines scanned
    sources: Counter = field(default_factory=Counter)  # kind -> distinct sources
    missing: list[str] = field(default_factory=list)  # registered files that never appeared


# Kinds of source: log records of this process, subprocess log files, subprocess
# standard error, pytest's capture of this process's standard error, HTTP error bodies.
KINDS = ("pytest log", "subprocess log", "subprocess stderr", "captured stderr",
         "http error body")


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _ScanHandler(logging.Handler):
    """Root handler writing every record, formatted with its traceback, to the recorder."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(level=logging.DEBUG)
        self.recorder = recorder
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - a record that cannot format is still scanned
            text = f"{record.msg!r} {record.args!r}"
        self.recorder.add_text("pytest log", f"logger {record.name}", text)


class Recorder:
    """Collects the session's log lines and error bodies into ``directory`` as they come
    (one JSON line a record in ``records.jsonl``, subprocess log files copied whole), so
    that the scan at the end reads all of them with the final registry."""

    def __init__(self, directory: Path = SESSION_DIR) -> None:
        self.directory = directory
        self.test = ""
        self.registry = Registry()
        self._lock = threading.Lock()
        self._pending: list[tuple[Path, str, str]] = []  # (path, source, test)
        self._copied = 0
        self.files_registered = 0
        self._watched: list[tuple[Path, str]] = []
        self._adopted: set[Path] = set()
        self._records = None
        self.handler = _ScanHandler(self)
        # A fork while another thread writes a record must not leave the child's lock held.
        os.register_at_fork(after_in_child=self._reinit_lock)

    def _reinit_lock(self) -> None:
        self._lock = threading.Lock()

    def start(self) -> None:
        """Make this session's folder; clear those of sessions no longer running."""
        for old in self.directory.parent.glob("session-*"):
            pid = old.name.removeprefix("session-")
            if old != self.directory and (not pid.isdigit() or not _running(int(pid))):
                shutil.rmtree(old, ignore_errors=True)
        (self.directory / "files").mkdir(parents=True, exist_ok=True)
        self._records = open(self.directory / "records.jsonl", "ab", buffering=0)  # noqa: SIM115

    def close(self) -> None:
        self.flush_files()
        if self._records is not None:
            self._records.close()
            self._records = None

    def add_text(self, kind: str, source: str, text: str | bytes) -> None:
        """Keep ``text`` (a log record, a stderr, an error body) to be scanned."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
        line = orjson.dumps({"kind": kind, "source": source, "test": self.test,
                             "text": text}) + b"\n"
        with self._lock:
            if self._records is not None:
                self._records.write(line)

    def add_file(self, path: Path, source: str) -> None:
        """Copy the log file ``path`` of a subprocess when the current test ends."""
        with self._lock:
            self._pending.append((Path(path), source, self.test))
            self.files_registered += 1

    def watch(self, folder: Path, source: str) -> None:
        """Register each log file that appears in ``folder`` (children that name their
        own files, as the bench's do under ``STREAMS_BENCH_LOG_DIR``) when a test ends."""
        self._watched.append((Path(folder), source))

    def flush_files(self) -> None:
        """Copy the registered files now (the end of a test: their processes stopped)."""
        for folder, source in self._watched:
            for path in sorted(folder.glob("*.log")) if folder.is_dir() else ():
                if path not in self._adopted:
                    self._adopted.add(path)
                    self.add_file(path, f"{source} ({path.name})")
        with self._lock:
            pending, self._pending = self._pending, []
        for path, source, test in pending:
            self._copied += 1
            target = self.directory / "files" / f"{self._copied:05d}.log"
            meta = {"source": source, "test": test, "path": str(path)}
            if path.exists():
                shutil.copyfile(path, target)
            else:
                meta["missing"] = True
            (target.with_suffix(".json")).write_bytes(orjson.dumps(meta))

    def scan(self) -> tuple[list[Hit], Coverage]:
        """Scan everything collected so far with the registry as it is now."""
        return scan_directory(self.directory, self.registry)


def scan_directory(directory: Path, registry: Registry) -> tuple[list[Hit], Coverage]:
    """Scan a recorder's directory: ``records.jsonl`` and ``files/*.log``."""
    hits: list[Hit] = []
    coverage = Coverage()
    sources: dict[str, set[str]] = {kind: set() for kind in KINDS}
    records = directory / "records.jsonl"
    if records.exists():
        with open(records, "rb") as lines:
            for raw in lines:
                record = orjson.loads(raw)
                kind, source, test = record["kind"], record["source"], record["test"]
                text = record["text"]
                coverage.lines[kind] += max(1, text.count("\n") + 1)
                sources[kind].add(f"{source} {test}" if kind != "pytest log" else source)
                hits += scan_text(text, registry, f"{kind}: {source}", test)
    for meta_path in sorted((directory / "files").glob("*.json")):
        meta = orjson.loads(meta_path.read_bytes())
        if meta.get("missing"):
            coverage.missing.append(f"{meta['source']} ({meta['test']})")
            continue
        sources["subprocess log"].add(meta_path.stem)
        with open(meta_path.with_suffix(".log"), encoding="utf-8", errors="replace") as log:
            for number, line in enumerate(log, start=1):
                coverage.lines["subprocess log"] += 1
                hits += scan_text(line, registry, f"subprocess log: {meta['source']}",
                                  meta["test"], number)
    for kind, names in sources.items():
        coverage.sources[kind] = len(names)
    return hits, coverage


# A whole-suite run must have read at least this much of each kind, or the scan's
# plumbing broke: (kind, "lines" or "sources", floor). Under half of what a run read on
# 2026-12-02: 760 log lines, 43 subprocess logs, 11 command stderrs, 50 error bodies.
FLOORS = (("pytest log", "lines", 300), ("subprocess log", "sources", 15),
          ("subprocess stderr", "sources", 5), ("http error body", "sources", 15))


def coverage_problems(coverage: Coverage, whole_suite: bool, spawned: bool) -> list[str]:
    """Why the scan read too little to mean anything; empty when it read enough."""
    problems = [f"registered log file never written: {m}" for m in coverage.missing]
    if spawned and not coverage.sources["subprocess log"]:
        problems.append("tests started workers or servers, yet no subprocess log was read")
    if whole_suite:
        for kind, measure, floor in FLOORS:
            got = getattr(coverage, measure)[kind]
            if got < floor:
                problems.append(f"only {got} {kind} {measure} scanned in the whole suite "
                                f"(at least {floor} expected)")
    return problems


def summary(hits: list[Hit], coverage: Coverage, problems: list[str]) -> str:
    """The scan's report, as written to the summary file and the terminal."""
    total_lines = sum(coverage.lines.values())
    total_sources = sum(coverage.sources.values())
    out = [f"leak scan: {total_lines} lines from {total_sources} sources; "
           f"{len(hits)} hits; {len(problems)} coverage problems"]
    for kind in KINDS:
        out.append(f"  {kind:18} {coverage.lines[kind]:>9} lines  "
                   f"{coverage.sources[kind]:>6} sources")
    out += [f"  PROBLEM: {p}" for p in problems]
    out += [f"  HIT: {h}" for h in hits[:200]]
    if len(hits) > 200:
        out.append(f"  ... and {len(hits) - 200} more hits")
    return "\n".join(out) + "\n"


# --- the session's recorder and its hooks into the clients ------------------------------

RECORDER = Recorder()


def register_secrets(values: Iterable[str]) -> None:
    for value in values:
        RECORDER.registry.add_secret(value)


def register_person(*values: object) -> None:
    for value in values:
        RECORDER.registry.add_person(value)


def secrets_of(settings) -> list[str]:
    """Every secret of ``settings`` in clear: API tokens, write keys, the forget key, the
    ops token and the database password (unless it is the public local default)."""
    found = [t.secret.get_secret_value() for t in settings.api.tokens]
    found += list(settings.collector.write_keys)
    found += [secret.get_secret_value() for secret in (settings.api.forget_key,
                                                        settings.ops_token) if secret]
    # The local default password, "streams", is public and is every logger's name.
    if settings.database.password not in PUBLIC:
        found.append(settings.database.password)
    return found


def register_settings(settings) -> None:
    """Register every secret of ``settings`` for the session's scan."""
    register_secrets(secrets_of(settings))


def assert_no_secrets(text: str, settings, where: str = "logs") -> None:
    """Fail at once, naming where and the redacted secret, when ``text`` holds a secret
    of ``settings`` (the session's scan finds it too, at the end; this says it sooner)."""
    registry = Registry()
    for value in secrets_of(settings):
        registry.add_secret(value)
    hits = [h for h in scan_text(text, registry, where) if h.kind == "secret"]
    assert not hits, f"{where} hold secrets: " + "; ".join(map(str, hits))


def install_hooks(recorder: Recorder = RECORDER) -> None:
    """Route log records, subprocess stderr and HTTP error bodies to ``recorder``."""
    root = logging.getLogger()
    root.addHandler(recorder.handler)
    # INFO, as every streams process logs (settings.log_level); records below it are
    # not made at all in production either.
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    _hook_subprocess(recorder)
    _hook_asyncio_subprocess(recorder)
    _hook_aiohttp(recorder)
    _hook_playwright(recorder)
    _hook_requests(recorder)
    _hook_urllib(recorder)


def _command(args: object) -> str:
    parts = [str(a) for a in (args if isinstance(args, list | tuple) else [args])]
    if len(parts) >= 3 and parts[1] == "-m":
        parts = parts[2:]  # python -m streams worker -> streams worker
    else:
        parts[0] = Path(parts[0]).name
    return " ".join(parts[:3])


def _hook_subprocess(recorder: Recorder) -> None:
    import subprocess

    original = subprocess.Popen.communicate

    def communicate(self, *args, **kwargs):
        out, err = original(self, *args, **kwargs)
        if err:
            recorder.add_text("subprocess stderr", _command(self.args), err)
        return out, err

    subprocess.Popen.communicate = communicate


def _hook_asyncio_subprocess(recorder: Recorder) -> None:
    import asyncio
    import asyncio.subprocess as aio_subprocess

    original_exec = asyncio.create_subprocess_exec
    original_communicate = aio_subprocess.Process.communicate

    async def create_subprocess_exec(program, *args, **kwargs):
        proc = await original_exec(program, *args, **kwargs)
        proc.scan_command = _command([program, *args])
        return proc

    async def communicate(self, *args, **kwargs):
        out, err = await original_communicate(self, *args, **kwargs)
        if err:
            recorder.add_text("subprocess stderr", getattr(self, "scan_command", "?"), err)
        return out, err

    asyncio.create_subprocess_exec = create_subprocess_exec
    aio_subprocess.create_subprocess_exec = create_subprocess_exec
    aio_subprocess.Process.communicate = communicate


def _error_source(method: str, url: object, status: int) -> str:
    path = str(url).split("?", 1)[0]  # a query may carry ?token=; the path is enough
    return f"{status} {method} {path}"


def _hook_aiohttp(recorder: Recorder) -> None:
    from aiohttp import ClientResponse

    original_read = ClientResponse.read
    original_exit = ClientResponse.__aexit__

    async def read(self):
        body = await original_read(self)
        if self.status >= 400 and not getattr(self, "scan_recorded", False):
            self.scan_recorded = True
            recorder.add_text("http error body", _error_source(self.method, self.url,
                                                               self.status), body)
        return body

    async def aexit(self, exc_type, exc, tb):
        # An error body the test only checked the status of is scanned all the same.
        if exc_type is None and self.status >= 400 and not getattr(self, "scan_recorded", False):
            with contextlib.suppress(Exception):
                await read(self)
        return await original_exit(self, exc_type, exc, tb)

    ClientResponse.read = read
    ClientResponse.__aexit__ = aexit


def _hook_playwright(recorder: Recorder) -> None:
    """Error bodies the browser tests' pages fetched (the person page's API calls, the
    SDKs' posts to the collector): every page opened gets a response listener."""
    try:
        from playwright.async_api import Browser, BrowserContext
    except ImportError:  # the browser tests are not installed here
        return

    async def on_response(response) -> None:
        if response.status < 400:
            return
        with contextlib.suppress(Exception):  # a body gone with its page is not read
            body = await response.text()
            recorder.add_text("http error body", _error_source(
                response.request.method, response.url, response.status), body)

    for cls in (Browser, BrowserContext):
        original = cls.new_page

        async def new_page(self, *args, _original=original, **kwargs):
            page = await _original(self, *args, **kwargs)
            page.on("response", on_response)
            return page

        cls.new_page = new_page


def _hook_requests(recorder: Recorder) -> None:
    import requests

    original = requests.Session.send

    def send(self, request, **kwargs):
        response = original(self, request, **kwargs)
        if response.status_code >= 400 and not kwargs.get("stream"):
            recorder.add_text("http error body", _error_source(
                request.method, request.url, response.status_code), response.content)
        return response

    requests.Session.send = send


def _hook_urllib(recorder: Recorder) -> None:
    import urllib.error
    import urllib.request

    original = urllib.request.OpenerDirector.open

    def open_(self, fullurl, *args, **kwargs):
        try:
            return original(self, fullurl, *args, **kwargs)
        except urllib.error.HTTPError as error:
            body = error.read()
            method = getattr(fullurl, "method", None) or "GET"
            url = getattr(fullurl, "full_url", fullurl)
            recorder.add_text("http error body", _error_source(method, url, error.code), body)
            # Give the caller an error it can still read.
            raise urllib.error.HTTPError(error.url, error.code, error.msg, error.hdrs,
                                         io.BytesIO(body)) from None

    urllib.request.OpenerDirector.open = open_
