"""Local Kafka and PostgreSQL for one machine: ``streams infra up | down | status``.

When STREAMS_KAFKA_BOOTSTRAP or STREAMS_DATABASE_URL name a server that already answers
(and is not one we started), that server is used as it is and nothing is started for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psycopg

from streams.infra.kafka import LocalKafka, metadata_ok
from streams.infra.postgres import LocalPostgres
from streams.infra.procs import InfraError, port_open
from streams.settings import Settings

__all__ = ["InfraError", "ServiceState", "infra_up", "infra_down", "infra_status"]


@dataclass(frozen=True)
class ServiceState:
    """One line of ``infra status``/``up``: what runs, where, which version, who owns it."""

    name: str
    state: str  # running | stopped | external | unreachable
    address: str
    version: str
    pid: int | None = None
    detail: str = ""
    seconds: float = 0.0
    started: bool = False


def _kafka_external(settings: Settings, kafka: LocalKafka) -> bool:
    host, port = settings.kafka.host_port
    return kafka.pid() is None and port_open(host, port) and metadata_ok(settings.kafka.bootstrap)


def _postgres_external(settings: Settings, pg: LocalPostgres) -> bool:
    t = settings.database
    if pg.pid() is not None or not port_open(t.host, t.port):
        return False
    try:
        with psycopg.connect(
            host=t.host, port=t.port, user=t.user, password=t.password, dbname=t.dbname,
            connect_timeout=3,
        ) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.Error:
        return False


def infra_up(settings: Settings, fresh: bool = False) -> list[ServiceState]:
    """Start (or find running) Kafka and PostgreSQL and wait until both answer. Blocks.

    Raises InfraError with one operator-facing line when something is in the way.
    """
    kafka, pg = LocalKafka(settings), LocalPostgres(settings)
    if fresh:
        infra_down(settings)
        kafka.wipe()
        pg.wipe()
    states = []

    t0 = time.monotonic()
    if _kafka_external(settings, kafka):
        states.append(ServiceState("kafka", "external", settings.kafka.bootstrap, "?",
                                   detail="not managed by streams infra"))
    else:
        fetched = kafka.resolve()
        started = kafka.start()
        st = kafka.status()
        detail = f"KRaft combined, data {st.data_dir}"
        if fetched:
            detail += f", jars resolved in {fetched:.1f}s"
        states.append(ServiceState("kafka", "running", st.address, f"Apache Kafka {st.version}",
                                   st.pid, detail, time.monotonic() - t0, started))

    t0 = time.monotonic()
    if _postgres_external(settings, pg):
        states.append(ServiceState("postgres", "external", settings.database.redacted(), "?",
                                   detail="not managed by streams infra"))
    else:
        started = pg.start()
        st = pg.status()
        states.append(ServiceState("postgres", "running", st.address, f"PostgreSQL {st.version}",
                                   st.pid, f"data {st.data_dir}", time.monotonic() - t0, started))
    return states


def infra_down(settings: Settings) -> list[ServiceState]:
    """Stop what ``infra_up`` started; data stays. Blocks until both processes are gone."""
    kafka, pg = LocalKafka(settings), LocalPostgres(settings)
    out = []
    t0 = time.monotonic()
    stopped = pg.stop()
    out.append(ServiceState("postgres", "stopped", pg.status().address, "",
                            detail="stopped" if stopped else "was not running",
                            seconds=time.monotonic() - t0))
    t0 = time.monotonic()
    stopped = kafka.stop()
    out.append(ServiceState("kafka", "stopped", kafka.status().address, "",
                            detail="stopped" if stopped else "was not running",
                            seconds=time.monotonic() - t0))
    return out


def infra_status(settings: Settings) -> list[ServiceState]:
    """What runs, where, and its version. Never starts anything."""
    kafka, pg = LocalKafka(settings), LocalPostgres(settings)
    ks = kafka.status()
    if ks.running:
        kstate = ServiceState("kafka", "running", ks.address, f"Apache Kafka {ks.version}", ks.pid,
                              f"data {ks.data_dir}")
    elif _kafka_external(settings, kafka):
        kstate = ServiceState("kafka", "external", settings.kafka.bootstrap, "?",
                              detail="answers, not managed by streams infra")
    else:
        jars = "jars cached" if kafka.resolved() else "jars not yet resolved"
        kstate = ServiceState("kafka", "stopped", ks.address, f"Apache Kafka {ks.version}",
                              detail=jars)
    ps = pg.status()
    if ps.running:
        pstate = ServiceState("postgres", "running", ps.address, f"PostgreSQL {ps.version}",
                              ps.pid, f"data {ps.data_dir}")
    elif _postgres_external(settings, pg):
        pstate = ServiceState("postgres", "external", settings.database.redacted(), "?",
                              detail="answers, not managed by streams infra")
    else:
        pstate = ServiceState("postgres", "stopped", ps.address, f"PostgreSQL {ps.version}",
                              detail="initialised" if pg.initialised() else "no cluster yet")
    return [kstate, pstate]

