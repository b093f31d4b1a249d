"""A local single-node Apache Kafka broker in KRaft combined mode, without Docker.

The jars come from Maven Central through Maven (``kafka_2.13`` and its runtime
dependencies) into ``<cache_dir>/kafka-<version>/libs``, once; the storage is formatted once
with ``kafka.tools.StorageTool``; the broker runs as ``kafka.Kafka`` on the machine's Java.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from streams.infra.procs import (
    InfraError,
    ensure_port_free,
    port_open,
    read_pid,
    stop_pid,
    tail,
)
from streams.settings import Settings

# How long a starting broker may go without answering a metadata request while its
# log shows no progress; while the log grows (a broker with thousands of partitions
# loads or deletes their logs first), waiting goes on, up to READY_LIMIT in all.
READY_TIMEOUT = 90.0
READY_LIMIT = 900.0


@dataclass(frozen=True)
class KafkaStatus:
    """What ``infra status`` shows for the broker."""

    running: bool
    pid: int | None
    address: str
    version: str
    data_dir: Path


class LocalKafka:
    """Resolves, formats, starts and stops the local broker. Every method blocks."""

    def __init__(self, settings: Settings):
        self.kafka, self.infra = settings.kafka, settings.infra
        self.version = self.infra.kafka_version
        self.host, self.port = self.kafka.host_port
        self.home = self.infra.cache_dir.expanduser().resolve() / f"kafka-{self.version}"
        self.libs = self.home / "libs"
        self.root = self.infra.data_dir.resolve() / "kafka"
        self.log_dir = self.root / "data"
        self.pid_file = self.root / "kafka.pid"
        self.config_file = self.root / "server.properties"
        self.stdout_file = self.root / "stdout.log"

    # --- jars ----------------------------------------------------------------------
    def resolved(self) -> bool:
        return (self.home / ".complete").exists()

    def resolve(self) -> float:
        """Fetch the broker's jars with Maven unless cached; returns seconds spent."""
        if self.resolved():
            return 0.0
        java_bin()
        mvn = shutil.which("mvn")
        if mvn is None:
            raise InfraError(
                "kafka: Maven (mvn) is not on PATH; install it (apt-get install maven) so that "
                "the broker's jars can be resolved from Maven Central"
            )
        started = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        pom = resources.files("streams.infra").joinpath("kafka-pom.xml").read_text()
        repos = ""
        if self.infra.maven_repo:
            repos = (
                "<repositories><repository><id>streams-mirror</id>"
                f"<url>{self.infra.maven_repo}</url></repository></repositories>"
            )
        pom = pom.replace("@KAFKA_VERSION@", self.version).replace("@REPOSITORIES@", repos)
        (self.home / "pom.xml").write_text(pom)
        staging = self.home / "libs.partial"
        shutil.rmtree(staging, ignore_errors=True)
        cmd = [
            mvn, "-B", "-q", "-f", str(self.home / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={staging}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "ERROR" in ln]
            reason = lines[0].strip() if lines else "mvn exited with " + str(proc.returncode)
            raise InfraError(
                f"kafka: could not resolve org.apache.kafka:kafka_2.13:{self.version} from Maven "
                f"Central ({reason[:300]}); check that Maven Central is reachable, or set "
                "STREAMS_MAVEN_REPO to a mirror, or STREAMS_KAFKA_VERSION to a released version"
            )
        shutil.rmtree(self.libs, ignore_errors=True)
        staging.rename(self.libs)
        (self.home / ".complete").write_text(self.version + "\n")
        return time.monotonic() - started

    def classpath(self) -> str:
        return str(self.libs / "*")

    # --- storage -------------------------------------------------------------------
    def write_config(self) -> None:
        """Write server.properties from the settings (every start, so ports follow them)."""
        self.root.mkdir(parents=True, exist_ok=True)
        cport = self.infra.kafka_controller_port
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://{self.host}:{self.port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(self.log_dir),
            "num.partitions": str(self.kafka.partitions),
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # One disk, one node: keep background threads few (the machine has 2 cores).
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
            "log.segment.bytes": str(256 * 1024 * 1024),
        }
        self.config_file.write_text("".join(f"{k}={v}\n" for k, v in props.items()))

    def formatted(self) -> bool:
        return (self.log_dir / "meta.properties").exists()

    def format(self) -> None:
        """Format the KRaft storage once with a fresh cluster id (blocks)."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cluster_id = _kafka_uuid()
        proc = subprocess.run(
            [
                java_bin(), "-Xmx256m", "-cp", self.classpath(), *self._log_props(),
                "kafka.tools.StorageTool", "format", "-t", cluster_id,
                "-c", str(self.config_file),
            ],
            capture_output=True,
            text=True,
        )
        if proc.returncode != 0:
            raise InfraError(
                "kafka: formatting the storage failed: "
                + (proc.stderr or proc.stdout).strip().splitlines()[-1][:300]
            )

    def wipe(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    # --- process -------------------------------------------------------------------
    def pid(self) -> int | None:
        return read_pid(self.pid_file)

    def _log_props(self) -> list[str]:
        log4j = self.root / "log4j2.properties"
        if not log4j.exists():
            self.root.mkdir(parents=True, exist_ok=True)
            log4j.write_text(
                resources.files("streams.infra").joinpath("kafka-log4j2.properties").read_text()
            )
        return [f"-Dlog4j2.configurationFile={log4j}", f"-Dkafka.logs.dir={self.root / 'logs'}"]

    def start(self) -> bool:
        """Start the broker unless ours already runs; returns True when it started it."""
        if self.pid() is not None:
            self.wait_ready()
            return False
        ensure_port_free(self.port, "kafka", "STREAMS_KAFKA_BOOTSTRAP")
        ensure_port_free(self.infra.kafka_controller_port, "kafka controller",
                         "STREAMS_KAFKA_CONTROLLER_PORT")
        self.resolve()
        self.write_config()
        if not self.formatted():
            self.format()
        heap = self.infra.kafka_heap
        cmd = [
            java_bin(), f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true",
            # Fewer JIT/GC threads: the broker shares two cores with everything else.
            "-XX:CICompilerCount=2", "-XX:ParallelGCThreads=2", "-XX:ConcGCThreads=1",
            *self._log_props(), "-cp", self.classpath(), "kafka.Kafka", str(self.config_file),
        ]
        with open(self.stdout_file, "ab") as out:
            proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=self.root,
            )
        self.pid_file.write_text(f"{proc.pid}\n")
        self.wait_ready(proc)
        return True

    def wait_ready(self, proc: subprocess.Popen | None = None) -> None:
        """Block until the broker answers a metadata request, or raise InfraError: after
        READY_TIMEOUT seconds without progress in its log, or READY_LIMIT in all."""
        log_file = self.root / "logs" / "server.log"
        start = time.monotonic()
        deadline = start + READY_TIMEOUT
        log_size = -1
        while time.monotonic() < deadline:
            size = log_file.stat().st_size if log_file.exists() else 0
            if size != log_size:  # still working through its start: wait on
                log_size = size
                deadline = min(time.monotonic() + READY_TIMEOUT, start + READY_LIMIT)
            if proc is not None and proc.poll() is not None:
                self.pid_file.unlink(missing_ok=True)
                raise InfraError(
                    f"kafka: the broker exited with code {proc.returncode}; see "
                    f"{self.root / 'logs' / 'server.log'}: "
                    + tail(self.stdout_file, 3).replace("\n", " | ")
                )
            if port_open(self.host, self.port) and metadata_ok(self.kafka.bootstrap):
                return
            time.sleep(0.5)
        raise InfraError(
            f"kafka: no metadata answer from {self.host}:{self.port} after "
            f"{time.monotonic() - start:.0f}s (its log quiet for {READY_TIMEOUT:.0f}s or "
            f"{READY_LIMIT:.0f}s in all); see {log_file}"
        )

    def stop(self) -> bool:
        """Stop our broker (controlled shutdown, then SIGKILL after 60 s)."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        stop_pid(pid, timeout=60)
        self.pid_file.unlink(missing_ok=True)
        return True

    def status(self) -> KafkaStatus:
        pid = self.pid()
        return KafkaStatus(
            running=pid is not None and port_open(self.host, self.port),
            pid=pid,
            address=f"{self.host}:{self.port}",
            version=self.version,
            data_dir=self.log_dir,
        )


def java_bin() -> str:
    """The java executable (JAVA_HOME first), or InfraError saying how to get one."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    found = shutil.which("java")
    if found is None:
        raise InfraError(
            "kafka: no Java found; install Java 17 or newer "
            "(apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
        )
    return found


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never
    starting with '-' (the format command would read it as an option; Kafka's own
    Uuid.randomUuid draws again in that case too)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def metadata_ok(bootstrap: str, timeout: float = 5.0) -> bool:
    """True when the cluster at ``bootstrap`` answers a metadata request (blocks)."""

    async def probe() -> bool:
        from aiokafka.admin import AIOKafkaAdminClient

        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
        try:
            await admin.start()
            await admin.describe_cluster()
            return True
        finally:
            await admin.close()

    # A refused probe is an expected answer here, not an error worth aiokafka's log line.
    quiet = logging.getLogger("aiokafka")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(asyncio.wait_for(probe(), timeout))
    except Exception:
        return False
    finally:
        quiet.setLevel(level)
