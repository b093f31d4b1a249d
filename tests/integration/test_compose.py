"""docker-compose.yml cannot run here (no Docker engine); this keeps it consistent with
what `streams infra` runs and with the settings the code reads."""

from __future__ import annotations

import re

import yaml

from streams.auth import check_exposure
from streams.infra.postgres import LocalPostgres
from streams.settings import DEFAULT_DATABASE_URL, DatabaseTarget, Settings
from tests.helpers import REPO

COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def host_port(service: str) -> int:
    (mapping,) = SERVICES[service]["ports"]
    return int(mapping.split(":")[-2])


def test_kafka_image_is_the_version_infra_runs():
    image, tag = SERVICES["kafka"]["image"].split(":")
    assert image == "apache/kafka"
    assert tag == Settings.model_fields["kafka_version"].default
    env = SERVICES["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft combined, no ZooKeeper
    assert not any("ZOOKEEPER" in key for key in env)


def test_postgres_image_is_the_major_version_infra_runs(infra_settings):
    major = LocalPostgres(infra_settings).version().split(".")[0]
    assert SERVICES["postgres"]["image"] == f"postgres:{major}"


def test_ports_match_default_settings():
    defaults = Settings.model_fields
    assert host_port("kafka") == int(defaults["kafka_bootstrap"].default.rsplit(":", 1)[1])
    assert host_port("postgres") == DatabaseTarget.parse(DEFAULT_DATABASE_URL).port
    assert host_port("server") == defaults["http_port"].default


def test_database_credentials_match_the_default_url():
    target = DatabaseTarget.parse(DEFAULT_DATABASE_URL)
    env = SERVICES["postgres"]["environment"]
    assert (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"], env["POSTGRES_DB"]) == (
        target.user, target.password, target.dbname,
    )


# What a user exports for the ${NAME:?message} the file requires.
EXPORTED = {"STREAMS_WRITE_KEYS": "own_key_0123=web", "STREAMS_API_TOKENS": "tok_0123=read",
            "STREAMS_FORGET_KEY": "f" * 32, "STREAMS_OPS_TOKEN": "ops_0123"}


def interpolate(value: object) -> str:
    """Compose's ``${NAME:?message}`` (required variable) replaced by ``EXPORTED``."""
    return re.sub(r"\$\{(\w+):\?[^}]*\}", lambda m: EXPORTED[m.group(1)], str(value))


def test_app_services_use_valid_streams_settings(monkeypatch):
    for name in ("migrate", "worker", "server"):
        env = SERVICES[name]["environment"]
        for key in list(__import__("os").environ):
            if key.startswith("STREAMS_"):
                monkeypatch.delenv(key)
        for key, value in env.items():
            assert key.startswith("STREAMS_"), f"{name}: {key} is not a STREAMS_ setting"
            field = key.removeprefix("STREAMS_").lower()
            assert field in Settings.model_fields, f"{name}: {key} is not a known setting"
            monkeypatch.setenv(key, interpolate(value))
        settings = Settings()
        assert settings.kafka_bootstrap.split(":")[0] == "kafka"
        assert settings.database.host == "postgres"
        assert settings.write_keys, f"{name}: no write keys"
        # Credentials come from the user: `streams serve` accepts them beyond loopback.
        check_exposure(settings.model_copy(update={"http_host": "0.0.0.0"}))
        assert settings.api.forget_key is not None
    assert SERVICES["server"]["environment"]["STREAMS_HTTP_PORT"] == "8000"


def test_long_running_services_have_health_checks_and_wait_for_health():
    for name in ("kafka", "postgres", "worker", "server"):
        assert "healthcheck" in SERVICES[name], name
    for name in ("worker", "server"):
        deps = SERVICES[name]["depends_on"]
        assert deps["kafka"]["condition"] == "service_healthy"
        assert deps["migrate"]["condition"] == "service_completed_successfully"
