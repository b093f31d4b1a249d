"""One frozen settings object, read from ``STREAMS_*`` environment variables once.

Secrets (the database URL carries a password, write keys are credentials) are held as
``SecretStr`` so that neither ``repr`` nor logging ever shows them.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

DEFAULT_DATABASE_URL = "postgresql+psycopg://streams:streams@127.0.0.1:5432/streams"


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
    """Every setting of the product; see the README's configuration table."""

    model_config = SettingsConfigDict(env_prefix="STREAMS_", frozen=True, extra="ignore")

    # --- connections -------------------------------------------------------------
    kafka_bootstrap: str = "127.0.0.1:9092"
    database_url: SecretStr = SecretStr(DEFAULT_DATABASE_URL)
    http_host: str = "127.0.0.1"
    http_port: int = Field(8000, ge=1, le=65535)
    write_keys: Annotated[dict[str, str], NoDecode] = Field(
        default_factory=lambda: _parse_write_keys(
            "wk_web=web,wk_app=mobile,wk_watch=smartwatch,"
            "wk_fb=facebook,wk_ig=instagram,wk_tw=twitter,wk_li=linkedin"
        ),
        repr=False,
    )

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
    batch_seconds: float = Field(0.5, gt=0)
    commit_interval: float = Field(1.0, gt=0)
    log_level: str = "info"

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
    pg_shared_buffers: str = "256MB"
    maven_repo: str = ""

    @field_validator("write_keys", mode="before")
    @classmethod
    def _write_keys(cls, value: object) -> dict[str, str]:
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
        return SecretStr(url)

    # --- derived values --------------------------------------------------------------
    def topic(self, name: str) -> str:
        """The full topic name for a configured base name (prefix applied)."""
        return f"{self.topic_prefix}{name}"

    @property
    def event_topics(self) -> tuple[str, ...]:
        """The four input topics, prefixed."""
        return tuple(
            self.topic(t)
            for t in (self.topic_click, self.topic_view, self.topic_social, self.topic_identify)
        )

    @property
    def all_topics(self) -> tuple[str, ...]:
        """Every topic the product creates, prefixed."""
        return (*self.event_topics, self.topic(self.topic_dlq), self.topic(self.topic_messages))

    @property
    def database(self) -> DatabaseTarget:
        """The parsed database URL (holds the password; never print it)."""
        return DatabaseTarget.parse(self.database_url.get_secret_value())

    @property
    def kafka_host_port(self) -> tuple[str, int]:
        """Host and port of the first bootstrap server."""
        first = self.kafka_bootstrap.split(",")[0].strip()
        host, _, port = first.rpartition(":")
        return (host or "127.0.0.1"), int(port or 9092)

    def redacted_database_url(self) -> str:
        """The database URL with its password replaced by ``***``."""
        return self.database.redacted()


class DatabaseTarget:
    """Parts of a PostgreSQL URL. ``password`` is a secret; ``redacted()`` hides it."""

    __slots__ = ("url", "user", "password", "host", "port", "dbname")

    def __init__(self, url: str, user: str, password: str, host: str, port: int, dbname: str):
        self.url, self.user, self.password = url, user, password
        self.host, self.port, self.dbname = host, port, dbname

    @classmethod
    def parse(cls, url: str) -> DatabaseTarget:
        parts = urlsplit(url)
        return cls(
            url=url,
            user=parts.username or "streams",
            password=parts.password or "",
            host=parts.hostname or "127.0.0.1",
            port=parts.port or 5432,
            dbname=(parts.path or "/streams").lstrip("/") or "streams",
        )

    def with_dbname(self, dbname: str) -> str:
        """The same URL pointing at another database on the same server."""
        auth = self.user + (f":{self.password}" if self.password else "")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{dbname}"

    def redacted(self) -> str:
        auth = self.user + (":***" if self.password else "")
        return f"postgresql+psycopg://{auth}@{self.host}:{self.port}/{self.dbname}"

    def __repr__(self) -> str:
        return f"DatabaseTarget({self.redacted()!r})"


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment (raising pydantic's ValidationError on bad values)."""
    return Settings(**overrides)  # type: ignore[arg-type]
