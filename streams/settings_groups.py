"""The settings of each component, as small frozen records derived from ``Settings``.

``Settings`` (``streams/settings.py``) stays the one flat object read from the
``STREAMS_*`` environment; these records are built from it once, when it is made (and
again by ``model_copy``), and a component reads its own: ``settings.kafka.dlq`` is the
dead-letter topic with the prefix applied, ``settings.collector.rate`` the collector's
rate. The identity rules are ``streams.identity.models.IdentityRules``, parsed once too.

Every record is picklable (settings travel to fold processes) and compares by value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr

from streams.credentials import ApiToken, parse_api_tokens
from streams.identity.models import DEFAULT_PRIORITY, IdentityRules

if TYPE_CHECKING:
    from streams.settings import Settings


@dataclass(frozen=True, slots=True)
class KafkaSettings:
    """Where Kafka is and the product's topics, full names (prefix applied).

    From ``STREAMS_KAFKA_BOOTSTRAP`` and ``STREAMS_TOPIC_*``.
    """

    bootstrap: str
    prefix: str
    click: str
    view: str
    social: str
    identify: str
    dlq: str
    messages: str
    partitions: int
    replication: int

    @property
    def event_topics(self) -> tuple[str, ...]:
        """The four input topics: click, view, social, identify."""
        return (self.click, self.view, self.social, self.identify)

    @property
    def all_topics(self) -> tuple[str, ...]:
        """Every topic the product creates: the event topics, the DLQ, the messages."""
        return (*self.event_topics, self.dlq, self.messages)

    def event_topic(self, kind: str) -> str:
        """The topic of an event kind (click, view, social, identify); KeyError otherwise."""
        return {"click": self.click, "view": self.view, "social": self.social,
                "identify": self.identify}[kind]

    def topic(self, name: str) -> str:
        """The full name of a topic's base name (the prefix applied)."""
        return f"{self.prefix}{name}"

    @property
    def host_port(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server. Raises ValueError on a bad port.

        Computed on use, not when the settings are read: only the local infrastructure
        needs it, and a bootstrap list another client accepts must not fail the rest.
        """
        first = self.bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return (host or "127.0.0.1"), int(port or 9092)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Where ``streams serve`` listens (``STREAMS_HTTP_HOST``, ``STREAMS_HTTP_PORT``)."""

    host: str
    port: int

    @property
    def url(self) -> str:
        """The server's base URL, ``http://host:port``."""
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """The collector: write keys, rate limit, size limits, acknowledgement timeout and its
    producer's batching (``STREAMS_WRITE_KEYS``, ``STREAMS_COLLECTOR_*``,
    ``STREAMS_PRODUCER_*``). Write keys are credentials: left out of ``repr``."""

    write_keys: dict[str, str] = field(repr=False)
    rate: float
    burst: float
    max_event_bytes: int
    max_request_bytes: int
    ack_timeout: float
    linger_ms: int
    max_batch_bytes: int
    # aiokafka's compression_type: None for "none".
    compression: str | None


@dataclass(frozen=True, slots=True)
class DlqRatioLimit:
    """The systemic stop: stop, rather than dead-letter, when ``max_invalid_ratio`` of the
    last ``window`` events failed, once ``min_events`` were seen (``STREAMS_DLQ_*``)."""

    max_invalid_ratio: float
    window: int
    min_events: int


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """The stage runner: consumer group, batching, offset commits, retries, fold processes
    and the systemic stop (``STREAMS_CONSUMER_GROUP``, ``STREAMS_BATCH_*``,
    ``STREAMS_COMMIT_INTERVAL``, ``STREAMS_PROFILE_RETRIES``, ``STREAMS_FOLD_PROCESSES``,
    ``STREAMS_DLQ_*``)."""

    consumer_group: str
    batch_size: int
    batch_seconds: float
    commit_interval: float
    retries: int
    fold_processes: int
    dlq_limit: DlqRatioLimit


@dataclass(frozen=True, slots=True)
class OpsSettings:
    """The ops dashboard and ``streams lag`` (``STREAMS_OPS_*``).

    ``groups`` are the consumer groups to watch, the pipeline's own when
    ``STREAMS_OPS_GROUPS`` is empty (``*`` among them: every group).
    """

    token: SecretStr | None
    groups: tuple[str, ...]
    interval: float
    window: float
    history: float

    def token_value(self) -> str | None:
        """The token in clear (None when unset), to compare or send, never to print."""
        return self.token.get_secret_value() if self.token is not None else None


@dataclass(frozen=True, slots=True)
class InfraSettings:
    """The local Kafka and PostgreSQL of ``streams infra`` (``STREAMS_DATA_DIR``,
    ``STREAMS_CACHE_DIR``, ``STREAMS_KAFKA_VERSION``, ``STREAMS_KAFKA_CONTROLLER_PORT``,
    ``STREAMS_KAFKA_HEAP``, ``STREAMS_PG_SHARED_BUFFERS``, ``STREAMS_MAVEN_REPO``)."""

    data_dir: Path
    cache_dir: Path
    kafka_version: str
    kafka_controller_port: int
    kafka_heap: str
    pg_shared_buffers: str
    maven_repo: str


@dataclass(frozen=True, slots=True)
class TriggerSettings:
    """The trigger stage (``STREAMS_TRIGGERS_*``): the rules file (None: the built-in
    one), whether the worker runs the stage, its idle poll interval, batch and emit
    lanes (rounds run at once)."""

    file: Path | None
    enabled: bool
    poll_seconds: float
    batch: int
    emit_lanes: int


@dataclass(frozen=True, slots=True, repr=False)
class DatabaseTarget:
    """Parts of a PostgreSQL URL, and the schema of the profile tables (None: the
    connection's search path). ``password`` is a secret; ``redacted()`` hides it."""

    url: str
    user: str
    password: str
    host: str
    port: int
    dbname: str
    schema: str | None = None

    @classmethod
    def parse(cls, url: str, schema: str | None = None) -> DatabaseTarget:
        """Split ``url`` (already a ``postgresql+psycopg://`` URL) into its parts."""
        parts = urlsplit(url)
        return cls(
            url=url,
            user=parts.username or "streams",
            password=parts.password or "",
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            dbname=(parts.path or "/streams").lstrip("/") or "streams",
            schema=schema or None,
        )

    def with_dbname(self, dbname: str) -> str:
        """The same URL pointing at another database on the same server."""
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{dbname}"

    def redacted(self) -> str:
        """The URL with its password replaced by ``***``."""
        auth = self.user + (":***" if self.password else "")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{self.dbname}"

    def __repr__(self) -> str:
        return f"DatabaseTarget({self.redacted()!r})"


@dataclass(frozen=True, slots=True)
class ApiSettings:
    """The profile API's access (``STREAMS_API_TOKENS``, ``STREAMS_API_RATE``,
    ``STREAMS_API_BURST``) and the forget key (``STREAMS_FORGET_KEY``; None: the local
    one, see ``streams.credentials.local_secrets``). Secrets: left out of ``repr``."""

    tokens: tuple[ApiToken, ...] = field(repr=False)
    rate: float
    burst: float
    forget_key: SecretStr | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class SettingGroups:
    """Every per-component view of one ``Settings``."""

    kafka: KafkaSettings
    http: HttpSettings
    database: DatabaseTarget
    collector: CollectorSettings
    pipeline: PipelineSettings
    identity: IdentityRules
    ops: OpsSettings
    infra: InfraSettings
    triggers: TriggerSettings
    api: ApiSettings


def _identity_rules(s: Settings) -> IdentityRules:
    """Parse the ``STREAMS_IDENTITY_*`` text forms into typed rules."""
    values = frozenset({""} | {v.strip() for v in s.identity_blocked_values.split(",")})
    priority = tuple(t.strip() for t in s.identity_priority.split(",") if t.strip())
    return IdentityRules(
        blocked_values=values,
        blocked_patterns=(s.identity_blocked_pattern,) if s.identity_blocked_pattern else (),
        limits={k: int(v) for k, v in s.identity_limits.items()},
        default_limit=s.identity_default_limit,
        priority=priority or DEFAULT_PRIORITY,
        merge_cap=s.identity_merge_cap,
    )


def derive_groups(s: Settings) -> SettingGroups:
    """Build every component's view from the flat fields. Raises ValueError only for
    values that validation lets through (a ``model_copy`` update is not validated)."""
    prefix = s.topic_prefix
    return SettingGroups(
        kafka=KafkaSettings(
            bootstrap=s.kafka_bootstrap, prefix=prefix,
            click=prefix + s.topic_click, view=prefix + s.topic_view,
            social=prefix + s.topic_social, identify=prefix + s.topic_identify,
            dlq=prefix + s.topic_dlq, messages=prefix + s.topic_messages,
            partitions=s.topic_partitions, replication=s.topic_replication),
        http=HttpSettings(host=s.http_host, port=s.http_port),
        database=DatabaseTarget.parse(s.database_url.get_secret_value(), s.profiles_schema),
        collector=CollectorSettings(
            write_keys={_clear(k): v for k, v in s.write_keys.items()},
            rate=s.collector_rate, burst=s.collector_burst,
            max_event_bytes=s.collector_max_event_bytes,
            max_request_bytes=s.collector_max_request_bytes,
            ack_timeout=s.collector_ack_timeout, linger_ms=s.producer_linger_ms,
            max_batch_bytes=s.producer_max_batch_bytes,
            compression=None if s.producer_compression == "none" else s.producer_compression),
        pipeline=PipelineSettings(
            consumer_group=s.consumer_group, batch_size=s.batch_size,
            batch_seconds=s.batch_seconds, commit_interval=s.commit_interval,
            retries=s.profile_retries, fold_processes=s.fold_processes,
            dlq_limit=DlqRatioLimit(s.dlq_max_invalid_ratio, s.dlq_window, s.dlq_min_events)),
        identity=_identity_rules(s),
        ops=OpsSettings(
            token=s.ops_token, groups=tuple(s.ops_groups) or (s.consumer_group,),
            interval=s.ops_interval, window=s.ops_window, history=s.ops_history),
        infra=InfraSettings(
            data_dir=s.data_dir, cache_dir=s.cache_dir, kafka_version=s.kafka_version,
            kafka_controller_port=s.kafka_controller_port, kafka_heap=s.kafka_heap,
            pg_shared_buffers=s.pg_shared_buffers, maven_repo=s.maven_repo),
        triggers=TriggerSettings(
            file=s.triggers_file, enabled=s.triggers_enabled,
            poll_seconds=s.triggers_poll_seconds, batch=s.triggers_batch,
            emit_lanes=s.triggers_emit_lanes),
        api=ApiSettings(tokens=parse_api_tokens(s.api_tokens), rate=s.api_rate,
                        burst=s.api_burst, forget_key=s.forget_key),
    )


def _clear(key: object) -> str:
    """A write key in clear (settings hold them as secret strings; a ``model_copy``
    update may give plain ones)."""
    return key.get_secret_value() if isinstance(key, SecretStr) else str(key)
