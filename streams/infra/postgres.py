"""A local PostgreSQL cluster from Debian's ``postgresql`` package, without Docker.

The cluster lives in ``<data_dir>/postgres``, made with initdb and run with pg_ctl.
PostgreSQL refuses to run as root; when we are root the server runs as the unprivileged
``postgres`` system user that the Debian package creates.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from streams.infra.procs import InfraError, ensure_port_free, port_open, tail
from streams.settings import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT = 60.0
PG_VERSION_FILE = "PG_VERSION"


@dataclass(frozen=True)
class PostgresStatus:
    """What ``infra status`` shows for the database server."""

    running: bool
    pid: int | None
    address: str
    version: str
    data_dir: Path


def find_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder (Debian layout), or None."""
    candidates = []
    for path in Path("/usr/lib/postgresql").glob("*/bin"):
        if (path / "pg_ctl").exists() and (path / "initdb").exists():
            try:
                candidates.append((int(path.parent.name), path))
            except ValueError:
                continue
    if candidates:
        return max(candidates)[1]
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).resolve().parent if pg_ctl else None


def install_postgres() -> Path:
    """Install Debian's ``postgresql`` package without its default cluster (blocks, minutes).

    Raises InfraError when not root or when apt cannot fetch it.
    """
    if os.geteuid() != 0:
        raise InfraError(
            "postgres: PostgreSQL is not installed and we are not root; run "
            "`sudo apt-get install postgresql` or set STREAMS_DATABASE_URL to an existing server"
        )
    # The package would otherwise create and start a 'main' cluster on port 5432.
    conf_dir = Path("/etc/postgresql-common")
    conf_dir.mkdir(parents=True, exist_ok=True)
    conf = conf_dir / "createcluster.conf"
    text = conf.read_text() if conf.exists() else ""
    if not re.search(r"^\s*create_main_cluster\s*=\s*false", text, re.M):
        conf.write_text(text + "\ncreate_main_cluster = false\n")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
            raise InfraError(
                f"postgres: `{' '.join(cmd)}` failed ({last[0][:200]}); install PostgreSQL by "
                "hand or set STREAMS_DATABASE_URL to an existing server"
            )
    bindir = find_bindir()
    if bindir is None:
        raise InfraError("postgres: the postgresql package installed no pg_ctl/initdb")
    return bindir


class LocalPostgres:
    """Installs (when absent), initialises, starts and stops the local cluster. Blocking."""

    def __init__(self, settings: Settings):
        self.infra = settings.infra
        self.target = settings.database
        self.port = self.target.port
        self.root = self.infra.data_dir.resolve() / "postgres"
        self.pgdata = self.root / "data"
        self.log_file = self.root / "postgres.log"
        # Unix socket paths are limited to ~107 bytes, so the socket folder is short and
        # named after the data folder rather than inside it.
        digest = hashlib.sha1(str(self.pgdata).encode()).hexdigest()[:10]
        self.socket_dir = Path(tempfile.gettempdir()) / f"streams-pg-{digest}"
        self._bindir: Path | None = None

    # --- who runs it ---------------------------------------------------------------
    @property
    def as_root(self) -> bool:
        return os.geteuid() == 0

    def _run_user(self) -> pwd.struct_passwd | None:
        if not self.as_root:
            return None
        try:
            return pwd.getpwnam("postgres")
        except KeyError as exc:
            raise InfraError(
                "postgres: running as root but there is no 'postgres' system user to run the "
                "server as; install Debian's postgresql package"
            ) from exc

    def _chown(self, path: Path) -> None:
        user = self._run_user()
        if user is not None:
            os.chown(path, user.pw_uid, user.pw_gid)

    def _make_traversable(self, path: Path) -> None:
        """Let the postgres user reach ``path``: add o+x to parents that lack it."""
        if self._run_user() is None:
            return
        for parent in reversed(path.parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                parent.chmod(mode | stat.S_IXOTH)

    def _pg(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        user = self._run_user()
        kwargs: dict = {}
        if user is not None:
            kwargs = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        proc = subprocess.run(
            [str(self.bindir / tool), *args], capture_output=True, text=True,
            stdin=subprocess.DEVNULL, cwd="/", **kwargs,
        )
        if check and proc.returncode != 0:
            msg = (proc.stderr or proc.stdout).strip().splitlines()
            raise InfraError(f"postgres: {tool} failed: {(msg[-1] if msg else '?')[:300]}")
        return proc

    @property
    def bindir(self) -> Path:
        if self._bindir is None:
            self._bindir = find_bindir() or install_postgres()
        return self._bindir

    # --- cluster ---------------------------------------------------------------------
    def initialised(self) -> bool:
        return (self.pgdata / PG_VERSION_FILE).exists()

    def init(self) -> None:
        """Create the cluster with initdb (blocks)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._make_traversable(self.root)
        self._chown(self.root)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._chown(self.pgdata)
        # Local socket connections (folder readable only by the server's user and root)
        # are trusted; TCP needs the app role's password.
        self._pg(
            "initdb", "-D", str(self.pgdata), "-U", "postgres", "-E", "UTF8", "--no-locale",
            "--auth-local=trust", "--auth-host=scram-sha-256",
        )

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def pid(self) -> int | None:
        pid_file = self.pgdata / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError, IndexError):
            return None

    def start(self) -> bool:
        """Start the cluster unless ours runs; make the app role and database. Blocks."""
        started = False
        if self.pid() is None:
            ensure_port_free(self.port, "postgres", "STREAMS_DATABASE_URL's port")
            if not self.initialised():
                self.init()
            self.socket_dir.mkdir(mode=0o700, exist_ok=True)
            self._chown(self.socket_dir)
            self.log_file.touch(exist_ok=True)
            self._chown(self.log_file)
            options = " ".join([
                f"-c listen_addresses={self.target.host if self._loopback() else '127.0.0.1'}",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.socket_dir}",
                f"-c shared_buffers={self.infra.pg_shared_buffers}",
                "-c max_connections=200",
                # Checkpoints: at 2 GB a bench's writes started one every 40-80 s, back
                # to back (docs/triggers.md, "The bimodal burst explained").
                "-c wal_level=replica -c max_wal_size=8GB -c checkpoint_timeout=15min",
                "-c synchronous_commit=on -c fsync=on",
            ])
            argv = ("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-o", options,
                    "-w", "-t", str(int(READY_TIMEOUT)), "start")
            proc = self._pg(*argv, check=False)
            if proc.returncode != 0 and self.pid() is None:
                # Seen once right after a stop, with nothing in the server's log: a second
                # try after a pause has always worked. Anything lasting fails below.
                log.warning("pg_ctl start failed (%s); trying once more",
                            " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-2:]))
                time.sleep(2)
                proc = self._pg(*argv, check=False)
            if proc.returncode != 0:
                said = " | ".join((proc.stderr + proc.stdout).strip().splitlines()[-2:])
                raise InfraError(
                    f"postgres: pg_ctl start failed ({said[:300]}); "
                    + tail(self.log_file, 3).replace("\n", " | ")[:400]
                )
            started = True
        self._wait_ready()
        self._ensure_app_role()
        return started

    def _loopback(self) -> bool:
        return self.target.host in ("127.0.0.1", "localhost", "::1")

    def _admin_conn(self) -> psycopg.Connection:
        return psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname="postgres",
            autocommit=True, connect_timeout=5,
        )

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT
        last = ""
        while time.monotonic() < deadline:
            try:
                with self._admin_conn() as conn:
                    conn.execute("SELECT 1")
                    return
            except psycopg.OperationalError as exc:
                last = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
            time.sleep(0.3)
        raise InfraError(f"postgres: not accepting connections after {READY_TIMEOUT:.0f}s: {last}")

    def _ensure_app_role(self) -> None:
        """Create (or re-password) the app role and its database from STREAMS_DATABASE_URL."""
        t = self.target
        with self._admin_conn() as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (t.user,)).fetchone()
            verb = "ALTER" if exists else "CREATE"
            # CREATEDB lets the test suite make a throwaway database per session.
            conn.execute(
                sql.SQL("{} ROLE {} LOGIN CREATEDB PASSWORD {}").format(
                    sql.SQL(verb), sql.Identifier(t.user), sql.Literal(t.password)
                )
            )
            if not conn.execute(
                "SELECT 1 FROM pg_database WHERE datname = %s", (t.dbname,)
            ).fetchone():
                conn.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {}").format(
                        sql.Identifier(t.dbname), sql.Identifier(t.user)
                    )
                )
        # The app's own path: TCP with the password, as every other component connects.
        with psycopg.connect(
            host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname,
            connect_timeout=5,
        ) as conn:
            conn.execute("SELECT 1")

    def stop(self) -> bool:
        if self.pid() is None:
            return False
        self._pg("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "60", "stop")
        return True

    def version(self) -> str:
        try:
            out = subprocess.run(
                [str(self.bindir / "postgres"), "--version"], capture_output=True, text=True
            ).stdout
        except (OSError, InfraError):
            return "not installed"
        match = re.search(r"(\d+(?:\.\d+)+)", out)
        return match.group(1) if match else out.strip()

    def status(self) -> PostgresStatus:
        pid = self.pid()
        return PostgresStatus(
            running=pid is not None and port_open(self.target.host, self.port),
            pid=pid,
            address=f"{self.target.host}:{self.port}",
            version=self.version() if find_bindir() else "not installed",
            data_dir=self.pgdata,
        )
