import pytest
from pydantic import ValidationError

from streams.settings import load_settings


def test_defaults_follow_the_design_brief(monkeypatch):
    for key in list(__import__("os").environ):
        if key.startswith("STREAMS_"):
            monkeypatch.delenv(key)
    s = load_settings()
    assert s.kafka_bootstrap == "127.0.0.1:9092"
    assert (s.http_host, s.http_port) == ("127.0.0.1", 8000)
    assert s.topic_partitions == 8
    assert s.all_topics == (
        "events.click", "events.view", "events.social", "events.identify",
        "events.dlq", "messages.personalized",
    )


def test_environment_is_read_with_prefix(monkeypatch):
    monkeypatch.setenv("STREAMS_KAFKA_BOOTSTRAP", "10.0.0.5:9094")
    monkeypatch.setenv("STREAMS_WRITE_KEYS", "wk_web=web, wk_ig=Instagram ,")
    monkeypatch.setenv("STREAMS_TOPIC_PREFIX", "dev.")
    s = load_settings()
    assert s.kafka_host_port == ("10.0.0.5", 9094)
    assert s.write_keys == {"wk_web": "web", "wk_ig": "instagram"}
    assert s.topic(s.topic_view) == "dev.events.view"


def test_settings_are_frozen():
    s = load_settings()
    with pytest.raises(ValidationError):
        s.kafka_bootstrap = "elsewhere:9092"


def test_secrets_never_print(monkeypatch):
    monkeypatch.setenv("STREAMS_DATABASE_URL", "postgresql://app:hunter2@db.internal:6543/prod")
    monkeypatch.setenv("STREAMS_WRITE_KEYS", "sk_live_abc=web")
    s = load_settings()
    text = repr(s) + str(s) + repr(s.database) + s.redacted_database_url()
    assert "hunter2" not in text and "sk_live_abc" not in text
    assert s.database.password == "hunter2"
    assert s.database.port == 6543 and s.database.dbname == "prod"
    assert s.database_url.get_secret_value().startswith("postgresql+psycopg://")


@pytest.mark.parametrize(
    "env, value, fragment",
    [
        ("STREAMS_WRITE_KEYS", "wk_web", "entry #1 is not of the form key=source"),
        ("STREAMS_DATABASE_URL", "mysql://x@y/z", "must be a postgresql:// URL"),
        ("STREAMS_HTTP_PORT", "70000", "less than or equal to 65535"),
    ],
)
def test_bad_values_name_the_problem(monkeypatch, env, value, fragment):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert fragment in str(info.value)


def test_cli_reports_bad_setting_without_echoing_it(monkeypatch):
    from click.testing import CliRunner

    from streams.cli import main

    monkeypatch.setenv("STREAMS_WRITE_KEYS", "sk_secret_value")
    result = CliRunner().invoke(main, ["infra", "status"])
    assert result.exit_code == 2
    assert "STREAMS_WRITE_KEYS" in result.output
    assert "sk_secret_value" not in result.output


def test_child_environment_reproduces_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMS_KAFKA_BOOTSTRAP", "elsewhere:1")  # replaced, not inherited
    from streams.settings import child_environment

    s = load_settings(kafka_bootstrap="10.1.1.1:9092", data_dir=tmp_path, ops_groups=("a", "b"),
                      write_keys={"k1": "web"})
    env = child_environment(s)
    assert env["STREAMS_KAFKA_BOOTSTRAP"] == "10.1.1.1:9092"
    assert env["STREAMS_DATA_DIR"] == str(tmp_path.resolve())
    assert env["STREAMS_OPS_GROUPS"] == "a,b" and env["STREAMS_WRITE_KEYS"] == "k1=web"
    assert "STREAMS_OPS_TOKEN" not in env  # unset optional settings stay unset
    for key in [k for k in env if k.startswith("STREAMS_")]:
        monkeypatch.setenv(key, env[key])
    assert load_settings() == s
