import pickle

import pytest
from pydantic import SecretStr, ValidationError

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
    assert s.collector.write_keys == {"wk_web": "web", "wk_ig": "instagram"}
    assert s.write_keys == {SecretStr("wk_web"): "web", SecretStr("wk_ig"): "instagram"}
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
                      write_keys={"k1": "web"}, api_tokens="tok1=read,tok2=forget",
                      forget_key="k" * 16)
    env = child_environment(s)
    assert env["STREAMS_KAFKA_BOOTSTRAP"] == "10.1.1.1:9092"
    assert env["STREAMS_DATA_DIR"] == str(tmp_path.resolve())
    assert env["STREAMS_OPS_GROUPS"] == "a,b" and env["STREAMS_WRITE_KEYS"] == "k1=web"
    assert env["STREAMS_API_TOKENS"] == "tok1=read,tok2=forget"
    assert env["STREAMS_FORGET_KEY"] == "k" * 16
    assert "STREAMS_OPS_TOKEN" not in env  # unset optional settings stay unset
    for key in [k for k in env if k.startswith("STREAMS_")]:
        monkeypatch.setenv(key, env[key])
    assert load_settings() == s


# --- per-component views -------------------------------------------------------------


def test_views_group_the_flat_fields_with_the_prefix_applied():
    s = load_settings(topic_prefix="t1.", topic_dlq="dead", kafka_bootstrap="k1:9093,k2:9093",
                      producer_compression="gzip", dlq_window=50, profiles_schema="p_1")
    assert s.kafka.dlq == "t1.dead" and s.kafka.messages == "t1.messages.personalized"
    assert s.kafka.event_topics == ("t1.events.click", "t1.events.view", "t1.events.social",
                                    "t1.events.identify")
    assert s.kafka.event_topic("social") == "t1.events.social"
    assert s.kafka.host_port == ("k1", 9093) == s.kafka_host_port
    assert s.all_topics == s.kafka.all_topics and s.topic("x") == "t1.x"
    assert s.collector.compression == "gzip"
    assert load_settings(producer_compression="none").collector.compression is None
    assert s.pipeline.dlq_limit.window == 50 and s.pipeline.retries == s.profile_retries
    assert s.database.schema == "p_1" and load_settings(profiles_schema="").database.schema is None


def test_views_are_derived_once():
    s = load_settings()
    assert s.kafka is s.kafka and s.collector is s.collector and s.ops is s.ops
    assert s.identity is s.identity and s.database is s.database


def test_identity_rules_are_parsed_into_types():
    s = load_settings(identity_blocked_values="Null, x", identity_limits="email=2,user_id=1",
                      identity_priority="email, user_id", identity_merge_cap=7)
    rules = s.identity
    assert rules.blocked_values == frozenset({"", "Null", "x"})
    assert rules.limits == {"email": 2, "user_id": 1} and rules.limit("phone") == 5
    assert rules.priority == ("email", "user_id") and rules.merge_cap == 7
    assert rules.is_blocked("NULL") and rules.is_blocked("0000") and not rules.is_blocked("u1")
    assert load_settings(identity_blocked_pattern="").identity.blocked_patterns == ()


def test_model_copy_rebuilds_the_views_from_the_updated_fields():
    s = load_settings()
    c = s.model_copy(update={"topic_prefix": "c.", "ops_groups": ("a",), "collector_rate": 1.0,
                             "identity_merge_cap": 3, "database_url": SecretStr(
                                 "postgresql+psycopg://u:pw@h:1/other")})
    assert c.kafka.dlq == "c.events.dlq" and s.kafka.dlq == "events.dlq"
    assert c.ops.groups == ("a",) and s.ops.groups == ("streams-profiles",)
    assert c.collector.rate == 1.0 and c.identity.merge_cap == 3
    assert c.database.dbname == "other" and s.database.dbname != "other"
    assert s.model_copy().kafka is s.kafka  # nothing updated: nothing rebuilt


def test_views_travel_with_the_settings_to_a_child_process():
    s = load_settings(topic_prefix="p.", ops_token=SecretStr("tok"),
                      api_tokens="t1=read", forget_key="f" * 20)
    copy = pickle.loads(pickle.dumps(s))
    assert copy == s and copy.kafka == s.kafka and copy.identity == s.identity
    assert copy.ops.token_value() == "tok"
    assert copy.api == s.api and copy.api.tokens[0].secret.get_secret_value() == "t1"


@pytest.mark.parametrize(
    "env, value, fragment",
    [
        ("STREAMS_IDENTITY_BLOCKED_PATTERN", "[0-", "STREAMS_IDENTITY_BLOCKED_PATTERN is not a"),
        ("STREAMS_IDENTITY_LIMITS", "email=0", "STREAMS_IDENTITY_LIMITS: email=0"),
        ("STREAMS_OPS_WINDOW", "1", "STREAMS_OPS_INTERVAL"),
    ],
)
def test_errors_of_grouped_settings_name_the_variable(monkeypatch, env, value, fragment):
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert fragment in str(info.value)
    assert info.value.errors()[0]["loc"] == (env.removeprefix("STREAMS_").lower(),)


def test_views_never_show_secrets(monkeypatch):
    monkeypatch.setenv("STREAMS_DATABASE_URL", "postgresql://app:hunter2@db:5432/prod")
    monkeypatch.setenv("STREAMS_WRITE_KEYS", "sk_live_abc=web")
    monkeypatch.setenv("STREAMS_OPS_TOKEN", "op_secret_1")
    monkeypatch.setenv("STREAMS_API_TOKENS", "api_secret_1=read")
    monkeypatch.setenv("STREAMS_FORGET_KEY", "forget_secret_123")
    s = load_settings()
    text = (repr(s.collector) + repr(s.ops) + repr(s.database) + str(s.database) + repr(s)
            + str(s) + repr(s.api) + repr(s.api.tokens) + repr(s.model_dump()))
    for secret in ("hunter2", "sk_live_abc", "op_secret_1", "api_secret_1",
                   "forget_secret_123"):
        assert secret not in text
    assert s.collector.write_keys == {"sk_live_abc": "web"}
    assert s.database.password == "hunter2" and s.ops.token_value() == "op_secret_1"


# --- access: API tokens and the forget key ---------------------------------------------


def test_api_tokens_parse_into_scopes_and_forget_implies_read():
    s = load_settings(api_tokens=" r1=read , f1=FORGET,tok=with=padding==read")
    tokens = s.api.tokens
    assert [(t.name, t.scope) for t in tokens] == [("#1", "read"), ("#2", "forget"),
                                                  ("#3", "read")]
    assert tokens[2].secret.get_secret_value() == "tok=with=padding="
    assert tokens[0].allows("read") and not tokens[0].allows("forget")
    assert tokens[1].allows("read") and tokens[1].allows("forget")
    assert load_settings().api.tokens == ()


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("sekret_tok", "entry #1 is not of the form token=scope"),
        ("a1=read,sekret_tok=admin", "entry #2 has unknown scope 'admin'"),
        ("sekret_tok=read,sekret_tok=forget", "entry #2 repeats an earlier token"),
        ("=read", "entry #1 is not of the form"),
    ],
)
def test_bad_api_tokens_name_the_entry_never_the_token(monkeypatch, value, fragment):
    monkeypatch.setenv("STREAMS_API_TOKENS", value)
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert fragment in str(info.value)
    messages = " ".join(e["msg"] for e in info.value.errors())
    assert "sekret_tok" not in messages


def test_forget_key_must_be_long_enough(monkeypatch):
    monkeypatch.setenv("STREAMS_FORGET_KEY", "short")
    with pytest.raises(ValidationError) as info:
        load_settings()
    assert "STREAMS_FORGET_KEY must be at least 16" in str(info.value)
    assert load_settings(forget_key="x" * 16).api.forget_key == SecretStr("x" * 16)


@pytest.mark.parametrize("url", ["postgresql://u:hunter2@h:99999/db",
                                 "postgresql://u:hunter2@h:abc/db",
                                 "postgresql://u:hunter2@[::1/db"])
def test_unparseable_database_url_is_named_without_its_value(monkeypatch, url):
    monkeypatch.setenv("STREAMS_DATABASE_URL", url)
    with pytest.raises(ValidationError) as info:
        load_settings()
    error = info.value.errors()[0]
    assert error["loc"] == ("database_url",)
    assert "STREAMS_DATABASE_URL is not a valid URL" in error["msg"]
    assert "hunter2" not in error["msg"]
