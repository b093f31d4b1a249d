"""One frozen settings object, read from ``STREAMS_*`` environment variables once.

Secrets (the database URL carries a password, write keys are credentials) are held as
``SecretStr`` so that neither ``repr`` nor logging ever shows them.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.credentials import MIN_FORGET_KEY_LENGTH, parse_api_tokens
from streams.identity.models import IdentityRules
from streams.settings_groups import (
    ApiSettings,
    CollectorSettings,
    DatabaseTarget,
    HttpSettings,
    InfraSettings,
    KafkaSettings,
    OpsSettings,
    PipelineSettings,
    SettingGroups,
    TriggerSettings,
    derive_groups,
)

__all__ = ["DEFAULT_DATABASE_URL", "DEMO_WRITE_KEYS", "DatabaseTarget", "Settings",
           "child_environment", "configure_logging", "load_settings", "settings_env"]

DEFAULT_DATABASE_URL = "postgresql+psycopg://streams:streams@127.0.0.1:5432/streams"
# The built-in write keys: public (they are in the README), so fit for a laptop only;
# `streams serve` refuses them on a non-loopback address.
DEMO_WRITE_KEYS = ("wk_web=web,wk_app=mobile,wk_watch=smartwatch,"
                   "wk_fb=facebook,wk_ig=instagram,wk_tw=twitter,wk_li=linkedin")


def _parse_write_keys(raw: object) -> dict[str, str]:
    """Parse ``key=source,key=source`` into a mapping; raise ValueError naming the bad pair."""
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = str(raw or "").strip()
    keys: dict[str, str] = {}
    if not text:
        return keys
    for pair in text.split(","):
        pair = pair.strip()
        if not pair:
            continue
        key, sep, source = pair.partition("=")
        if not sep or not key.strip() or not source.strip():
            # Name the position, never the key itself: it is a credential.
            raise ValueError(
                f"STREAMS_WRITE_KEYS entry #{len(keys) + 1} is not of the form key=source"
            )
        keys[key.strip()] = source.strip().lower()
    return keys


class Settings(BaseSettings):
    """Every setting of the product; see the README's configuration table.

    The flat fields are the environment's contract (``STREAMS_<FIELD>``); components read
    the per-component records derived from them once: ``kafka``, ``http``, ``database``,
    ``collector``, ``pipeline``, ``identity``, ``ops``, ``infra``, ``triggers``.
    """

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    # --- connections -------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    # Secret strings as keys: printing the settings never shows a key (the collector
    # compares with the clear mapping in ``settings.collector.write_keys``).
    write_keys: Annotated[dict[SecretStr, str], NoDecode] = Field(
        default_factory=lambda: {SecretStr(k): v
                                 for k, v in _parse_write_keys(DEMO_WRITE_KEYS).items()},
        repr=False)

    # --- topics --------------------------------------------------------------------
    # The prefix lets tests (and several environments on one cluster) use their own topics.
    topic_prefix: str = ""
    topic_click: str = "events.click"
    topic_view: str = "events.view"
    topic_social: str = "events.social"
    topic_identify: str = "events.identify"
    topic_dlq: str = "events.dlq"
    topic_messages: str = "messages.personalized"
    topic_partitions: int = Field(8, ge=1, le=1024)
    topic_replication: int = Field(1, ge=1)

    # --- worker ----------------------------------------------------------------------
    consumer_group: str = "streams-profiles"
    batch_size: int = Field(500, ge=1)
    # perf: the longest a batch waits to fill; under load batches fill (batch_size) long
    # before, so this only bounds latency at moderate rates (at half load, p99 produce ->
    # commit: 0.5 s gave > 1 s; 0.2 s 0.85 s; 0.1 s 0.70 s).
    batch_seconds: float = Field(0.1, gt=0)
    commit_interval: float = Field(1.0, gt=0)
    # How long a worker that stopped heartbeating (killed, frozen) keeps its partitions
    # before the group hands them to the others, and so how long a restarted or added
    # worker can wait to join. Heartbeats come every 3 s from their own task.
    session_timeout: float = Field(20.0, ge=6, le=300)
    # Each worker serves its own /metrics (batch sizes, write and ack latency, dead letters,
    # retries) on STREAMS_HTTP_HOST at this port; 0 = off. Workers on one machine need
    # ports of their own.
    worker_metrics_port: int = Field(0, ge=0, le=65535)
    log_level: str = "info"

    # --- ingest: collector and dead letters (streams/ingest) --------------------------
    # Per write key, in events per second; 0 turns rate limiting off.
    collector_rate: float = Field(5000.0, ge=0)
    # Events a key may send at once before the rate applies.
    collector_burst: float = Field(20000.0, ge=1)
    collector_max_event_bytes: int = Field(32 * 1024, ge=1024)
    collector_max_request_bytes: int = Field(500 * 1024, ge=1024)
    # How long a request waits for Kafka's acknowledgement before answering 503.
    collector_ack_timeout: float = Field(30.0, gt=0)
    # The collector's producer: acks=all and idempotence are fixed; these tune batching.
    # 15 ms lets concurrent requests share record batches (fewer produce requests); it is
    # the longest a lone event waits before its batch is sent.
    producer_linger_ms: int = Field(15, ge=0)
    producer_max_batch_bytes: int = Field(256 * 1024, ge=16 * 1024)
    # snappy, lz4 and zstd need the cramjam package (aiokafka's codecs); gzip needs nothing.
    producer_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "none"
    # Processing side: stop (instead of dead-lettering) when this share of the last
    # dlq_window events failed validation, once dlq_min_events were seen.
    dlq_max_invalid_ratio: float = Field(0.95, gt=0, le=1)
    dlq_window: int = Field(1000, ge=1)
    dlq_min_events: int = Field(200, ge=1)
    # --- end ingest ---------------------------------------------------------------------
    # --- profiles & identity (profiles domain) --------------------------------------
    # Schema holding the profile tables ("" = the connection's default, public).
    profiles_schema: str = ""
    # Identifier values that never identify anyone: comma-separated, case-insensitive
    # (the empty value is always blocked), and one regex matched against the whole value.
    identity_blocked_values: str = "null,undefined,0,anonymous,none,nil,nan,unknown,n/a"
    identity_blocked_pattern: str = r"[0\-]+"
    # Identifiers of a type one profile may hold: "type=n,..."; other types get the default.
    identity_limits: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: {"user_id": "1"})
    identity_default_limit: int = Field(5, ge=1)
    # Highest priority first; "*" stands for custom types. Empty = the built-in order.
    identity_priority: str = ""
    identity_merge_cap: int = Field(100, ge=0)
    # Tries of a failing batch before it is split and its failing events dead-lettered.
    profile_retries: int = Field(3, ge=1)
    # Processes beside the worker that fold batches, one batch each, while Faust gathers
    # the next (see streams/profiles/folder.py); 0 folds in the worker's own event loop.
    fold_processes: int = Field(2, ge=0, le=16)

    # The trigger stage: the rules file (None: the built-in one shipped with the
    # package), whether the worker runs the stage, how often its loops look for work
    # when idle, and how many profiles / due messages one transaction takes.
    triggers_file: Path | None = None
    triggers_enabled: bool = True
    triggers_poll_seconds: float = Field(0.25, gt=0)
    triggers_batch: int = Field(200, ge=1)
    # Emit rounds one trigger process runs at once, each its own transaction on its own
    # connection (as several workers would): one decides while another waits for
    # Kafka's acknowledgement and its commit.
    triggers_emit_lanes: int = Field(2, ge=1, le=16)
    # The trigger process's CPU niceness (0-19): when the cores are saturated the fold,
    # which ingestion waits on, goes first; the stage's work is durable and catches up.
    triggers_nice: int = Field(10, ge=0, le=19)
    # While the profile stage of the worker is more than this many events behind the
    # end of its topics, the trigger stage yields to it: each of its loops runs a round
    # only once every ``triggers_yield_seconds`` (0: never yield). Its work is durable
    # (the feed, the schedule) and catches up when the fold does; a message cannot be
    # sooner than the fold of the event behind it anyway.
    triggers_yield_backlog: int = Field(2000, ge=0)
    triggers_yield_seconds: float = Field(10.0, gt=0)

    @field_validator("identity_blocked_pattern", mode="after")
    @classmethod
    def _identity_blocked_pattern(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"STREAMS_IDENTITY_BLOCKED_PATTERN is not a regex: {exc}") from None
        return value

    @field_validator("identity_limits", mode="before")
    @classmethod
    def _identity_limits(cls, value: object) -> dict[str, str]:
        if isinstance(value, dict):
            limits = value
        else:
            limits = {}
            for pair in filter(None, (p.strip() for p in str(value or "").split(","))):
                id_type, sep, n = pair.partition("=")
                if not sep or not id_type.strip():
                    raise ValueError(f"STREAMS_IDENTITY_LIMITS: {pair!r} is not type=count")
                limits[id_type.strip()] = n.strip()
        for id_type, n in limits.items():
            if not str(n).isdigit() or int(n) < 1:
                raise ValueError(f"STREAMS_IDENTITY_LIMITS: {id_type}={n} is not a count >= 1")
        return {str(k): str(v) for k, v in limits.items()}

    # --- local infrastructure (``streams infra``) -----------------------------------
    data_dir: Path = Path(".streams")
    cache_dir: Path = Path.home() / ".cache" / "streams"
    kafka_version: str = "4.4.0"
    kafka_controller_port: int = Field(9093, ge=1, le=65535)
    kafka_heap: str = "768m"
    pg_shared_buffers: str = "1GB"
    maven_repo: str = ""

    # --- ops dashboard (streams/ops) -------------------------------------------------
    # Protects /ops, /ops/lag.json and /metrics when set (Bearer header or ?token=);
    # required when http_host is not a loopback address.
    ops_token: SecretStr | None = None
    # Consumer groups to watch, comma-separated; empty means STREAMS_CONSUMER_GROUP (the
    # pipeline's own group), "*" every consumer group on the cluster.
    ops_groups: Annotated[tuple[str, ...], NoDecode] = ()
    # How often offsets are sampled, the window the status rules look at, and how much
    # history the charts keep (all in seconds; memory is bounded by history / interval).
    ops_interval: float = Field(5.0, gt=0)
    ops_window: float = Field(120.0, gt=0)
    ops_history: float = Field(3600.0, gt=0)

    @field_validator("ops_groups", mode="before")
    @classmethod
    def _ops_groups(cls, value: object) -> tuple[str, ...]:
        if isinstance(value, (list, tuple, set)):
            items = [str(v) for v in value]
        else:
            items = str(value or "").split(",")
        return tuple(dict.fromkeys(g.strip() for g in items if g.strip()))

    @field_validator("ops_window", mode="after")
    @classmethod
    def _ops_window(cls, value: float, info: ValidationInfo) -> float:
        interval = info.data.get("ops_interval")
        if interval is not None and value < 2 * interval:
            raise ValueError(
                f"must be at least twice STREAMS_OPS_INTERVAL ({interval}s) so that the "
                "status rules see two samples"
            )
        return value

    @field_validator("ops_history", mode="after")
    @classmethod
    def _ops_history(cls, value: float, info: ValidationInfo) -> float:
        window = info.data.get("ops_window")
        if window is not None and value < window:
            raise ValueError(f"must be at least STREAMS_OPS_WINDOW ({window}s)")
        return value
    # --- end ops ----------------------------------------------------------------------
    # --- event contract limits (streams/events/limits.py; docs/limits.md) -------------
    # One set at both ends: the collector refuses and the worker dead-letters the same.
    # Identifier values: at most the schema's 512 characters (also under PostgreSQL's
    # btree row limit of 2704 bytes at 4 bytes a character).
    event_max_identifier_chars: int = Field(512, ge=16, le=512)
    event_max_depth: int = Field(32, ge=4, le=200)  # nesting levels, the event itself is 1
    event_max_properties: int = Field(255, ge=16, le=10_000)  # keys of any one object
    # The event time is bounded to [receivedAt - past, receivedAt + future].
    event_max_future_seconds: float = Field(600.0, ge=0, le=7 * 86_400)
    event_max_past_days: float = Field(3650.0, gt=0, le=36_500)
    # --- end event contract limits ------------------------------------------------------
    # Browser origins allowed to post to the collector (streams/ingest/cors.py):
    # comma-separated scheme://host[:port|:*], "*" for any; empty: loopback origins.
    cors_origins: str = ""

    @field_validator("write_keys", mode="before")
    @classmethod
    def _write_keys(cls, value: object) -> dict[str, str]:
        if isinstance(value, dict):
            value = {(k.get_secret_value() if isinstance(k, SecretStr) else k): v
                     for k, v in value.items()}
        return _parse_write_keys(value)

    @field_validator("database_url", mode="after")
    @classmethod
    def _database_url(cls, value: SecretStr) -> SecretStr:
        url = value.get_secret_value()
        if not url.startswith(("postgresql://", "postgresql+psycopg://", "postgres://")):
            raise ValueError("STREAMS_DATABASE_URL must be a postgresql:// URL")
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        if url.startswith("postgresql://"):
            url = "postgresql+psycopg://" + url[len("postgresql://") :]
        try:  # here, not when the views are derived: the error then names this variable
            _ = urlsplit(url).port
        except ValueError:
            # Never urllib's message nor the value: both may carry the password.
            raise ValueError("STREAMS_DATABASE_URL is not a valid URL (check the host and "
                             "that the port is a number 1-65535)") from None
        return SecretStr(url)

    # --- access: profile API tokens, forget key (streams/auth.py, credentials.py) -------
    # "token=scope,..." with scopes read and forget (forget implies read); empty: `serve`
    # on a loopback address uses the token `streams up` keeps in <data_dir>/secrets.json.
    api_tokens: SecretStr = SecretStr("")
    # Profile API requests per second per token (per client address without a valid
    # token), and the burst allowed at once; 0 turns the limit off.
    api_rate: float = Field(50.0, ge=0)
    api_burst: float = Field(200.0, ge=1)
    # Keys the hashes that remember forgotten identifiers (HMAC-SHA256); every worker and
    # server must share it. Unset: the one `streams up` keeps in <data_dir>/secrets.json.
    forget_key: SecretStr | None = None

    @field_validator("api_tokens", mode="after")
    @classmethod
    def _api_tokens(cls, value: SecretStr) -> SecretStr:
        parse_api_tokens(value)  # raises ValueError naming the entry's position
        return value

    @field_validator("forget_key", mode="after")
    @classmethod
    def _forget_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().strip()) < MIN_FORGET_KEY_LENGTH:
            raise ValueError(f"STREAMS_FORGET_KEY must be at least {MIN_FORGET_KEY_LENGTH} "
                             "characters (`streams up` generates one)")
        return value
    # --- end access -----------------------------------------------------------------

    # --- per-component views, derived once ------------------------------------------
    # Private attributes, not cached properties: a frozen model still takes them, and
    # model_copy copies them, so model_copy below rebuilds them from the updated fields.
    _groups: SettingGroups = PrivateAttr()

    def model_post_init(self, context: Any, /) -> None:
        """Derive the per-component views from the validated fields (runs once)."""
        self._groups = derive_groups(self)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied (not validated, as pydantic's), whose views are
        derived again from the updated fields."""
        copied = super().model_copy(update=update, deep=deep)
        if update:
            copied._groups = derive_groups(copied)  # noqa: SLF001 - our own private attribute
        return copied

    @property
    def kafka(self) -> KafkaSettings:
        """Bootstrap servers and the topics (prefixed), partitions and replication."""
        return self._groups.kafka

    @property
    def http(self) -> HttpSettings:
        """Where the HTTP server listens."""
        return self._groups.http

    @property
    def database(self) -> DatabaseTarget:
        """The parsed database URL and the profile tables' schema (holds the password;
        never print it)."""
        return self._groups.database

    @property
    def collector(self) -> CollectorSettings:
        """Write keys, rate and size limits, ack timeout and producer batching."""
        return self._groups.collector

    @property
    def pipeline(self) -> PipelineSettings:
        """Consumer group, batching, commits, retries, fold processes, systemic stop."""
        return self._groups.pipeline

    @property
    def identity(self) -> IdentityRules:
        """The identity rules of ``STREAMS_IDENTITY_*``, parsed once."""
        return self._groups.identity

    @property
    def ops(self) -> OpsSettings:
        """The ops dashboard's token, watched groups and sampling."""
        return self._groups.ops

    @property
    def infra(self) -> InfraSettings:
        """The local infrastructure's folders, versions, ports and sizes."""
        return self._groups.infra

    @property
    def triggers(self) -> TriggerSettings:
        """The trigger stage's rules file, switch, poll interval and batch."""
        return self._groups.triggers

    @property
    def api(self) -> ApiSettings:
        """The profile API's tokens and rate, and the forget key (secrets: never print)."""
        return self._groups.api

    # --- shorthands kept for callers of the flat form --------------------------------
    def topic(self, name: str) -> str:
        """The full topic name for a configured base name (prefix applied)."""
        return self.kafka.topic(name)

    @property
    def event_topics(self) -> tuple[str, ...]:
        """The four input topics, prefixed."""
        return self.kafka.event_topics

    @property
    def all_topics(self) -> tuple[str, ...]:
        """Every topic the product creates, prefixed."""
        return self.kafka.all_topics

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server."""
        return self.kafka.host_port

    def redacted_database_url(self) -> str:
        """The database URL with its password replaced by ``***``."""
        return self.database.redacted()


def _clear(value: object) -> str:
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def settings_env(settings: Settings) -> dict[str, str]:
    """The STREAMS_* variables that reproduce ``settings`` in a child process (secrets in
    clear: for a child's environment only, never for printing)."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue  # optional settings stay unset
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        elif isinstance(value, dict):
            value = ",".join(f"{_clear(k)}={_clear(v)}" for k, v in value.items())
        elif isinstance(value, tuple):
            value = ",".join(str(v) for v in value)
        elif isinstance(value, Path):
            value = str(value.resolve())
        env[f"STREAMS_{name.upper()}"] = str(value)
    return env


def configure_logging(settings: Settings, role: str = "") -> None:
    """Log lines of every process (worker, server, fold processes) in one format, at
    ``settings.log_level``; ``role`` tags the lines of a helper process."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format=f"[%(asctime)s] [%(process)d] [%(levelname)s] %(name)s"
               f"{f' ({role})' if role else ''}: %(message)s")


def child_environment(settings: Settings) -> dict[str, str]:
    """This process's environment with every STREAMS_* replaced by ``settings``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    return {**base, **settings_env(settings), "PYTHONUNBUFFERED": "1"}


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (raising pydantic's ValidationError on bad values)."""
    return Settings(**overrides)  # type: ignore[arg-type]
