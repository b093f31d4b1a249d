"""``streams triggers check|list|stats`` and ``streams messages tail``: parsing and
printing, with click's CliRunner and no service."""

from __future__ import annotations

import io

import orjson
import pytest
from click.testing import CliRunner
from rich.console import Console

from streams.cli import main
from streams.triggers.commands import message_line, stats_table, summary
from streams.triggers.rules import builtin_rules_path, load_rules

ONE_RULE = """
quiet_hours = { start = "21:30", end = "07:00" }
caps = { per_day = 2, per_week = 5 }
[rules.hello]
kind = "welcome"
template = "hello-v2"
delay = "10s"
[rules.later]
kind = "re_engagement"
template = "later-v1"
inactive_for = "7d"
enabled = false
"""

BROKEN = """
[rules.welcome]
kind = "welcom"
template = "w"
[rules.browse]
kind = "browse_abandonment"
template = "b"
delay = "soon"
min_views = 0
colour = "red"
"""


@pytest.fixture
def runner(monkeypatch) -> CliRunner:
    monkeypatch.delenv("STREAMS_TRIGGERS_FILE", raising=False)
    return CliRunner()


def test_check_accepts_the_built_in_rules_with_a_summary(runner):
    result = runner.invoke(main, ["triggers", "check", str(builtin_rules_path())])
    assert result.exit_code == 0, result.output
    assert "ok, 5 rules, 5 enabled (browse_abandonment, cross_device, re_engagement," \
        in " ".join(result.stdout.split())
    assert result.stderr == ""


def test_check_lists_every_problem_naming_rule_and_field_and_exits_2(runner, tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(BROKEN)
    result = runner.invoke(main, ["triggers", "check", str(path)])
    assert result.exit_code == 2
    err = " ".join(result.stderr.split())
    assert f"{path}: 4 problems" in err
    assert "rule 'welcome': kind: must be one of welcome, browse_abandonment" in err
    assert "rule 'browse': delay: must be a duration like '30s', '2h', '7d', got 'soon'" in err
    assert "rule 'browse': min_views: input should be greater than or equal to 1" in err
    assert "rule 'browse': colour: unknown field" in err
    assert result.stdout == ""


def test_check_of_a_missing_file_or_bad_toml_is_a_problem_too(runner, tmp_path):
    missing = runner.invoke(main, ["triggers", "check", str(tmp_path / "nope.toml")])
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[rules.x\n")
    result = runner.invoke(main, ["triggers", "check", str(bad)])
    assert result.exit_code == 2 and "not valid TOML" in result.stderr


def test_check_needs_a_file_argument(runner):
    result = runner.invoke(main, ["triggers", "check"])
    assert result.exit_code == 2 and "Missing argument 'FILE'" in result.stderr


def test_list_shows_the_file_named_by_the_setting(runner, tmp_path, monkeypatch):
    path = tmp_path / "mine.toml"
    path.write_text(ONE_RULE)
    monkeypatch.setenv("STREAMS_TRIGGERS_FILE", str(path))
    result = runner.invoke(main, ["triggers", "list", "--json"])
    assert result.exit_code == 0, result.output
    doc = orjson.loads(result.stdout)
    assert doc["source"] == str(path)
    assert doc["quiet_hours"] == {"start": "21:30", "end": "07:00"}
    assert doc["caps"] == {"per_day": 2, "per_week": 5}
    assert [(r["name"], r["enabled"], r["delay"]) for r in doc["rules"]] == [
        ("hello", True, "10s"), ("later", False, "0s")]
    assert doc["rules"][1]["inactive_for"] == "1w"
    table = runner.invoke(main, ["triggers", "list"])
    assert table.exit_code == 0
    text = " ".join(table.stdout.split())
    assert "2 rules from" in text and "hello-v2" in text and "later-v1" in text
    assert "1 enabled (hello), 1 disabled (later)" in text


def test_list_without_the_setting_shows_the_built_in_rules(runner):
    doc = orjson.loads(runner.invoke(main, ["triggers", "list", "--json"]).stdout)
    assert doc["source"] == str(builtin_rules_path())
    assert {r["name"] for r in doc["rules"]} == {
        "welcome", "browse_abandonment", "cross_device", "re_engagement", "social_follow_up"}


def test_list_of_an_invalid_configured_file_exits_2_with_the_problems(runner, tmp_path,
                                                                      monkeypatch):
    path = tmp_path / "broken.toml"
    path.write_text(BROKEN)
    monkeypatch.setenv("STREAMS_TRIGGERS_FILE", str(path))
    result = runner.invoke(main, ["triggers", "list"])
    assert result.exit_code == 2 and "rule 'browse': colour: unknown field" in result.stderr


def test_summary_names_the_global_limits():
    assert summary(load_rules(builtin_rules_path())).endswith(
        "quiet hours 22:00-08:00, caps 3/day 10/week, default locale en, time zone UTC")


def _render(table) -> str:
    out = io.StringIO()
    Console(file=out, width=250, color_system=None).print(table)
    return out.getvalue()


def test_stats_table_shows_reasons_conversion_rates_and_lift():
    text = _render(stats_table([
        {"rule": "welcome", "scheduled": 20, "pending": 2, "sent": 10, "heldOut": 4,
         "cancelled": {"superseded": 1, "exit": 2}, "suppressed": {"consent": 1},
         "convertedSent": 5, "convertedHeldOut": 1, "lift": 0.25},
        {"rule": "quiet", "scheduled": 0, "pending": 0, "sent": 0, "heldOut": 0,
         "cancelled": {}, "suppressed": {}, "convertedSent": 0, "convertedHeldOut": 0,
         "lift": None},
    ]))
    welcome = next(line for line in text.splitlines() if "welcome" in line).split()
    assert welcome[:6] == ["welcome", "20", "2", "10", "4", "3"]
    assert "(exit 2, superseded 1)" in text and "1 (consent 1)" in text
    assert "5 (50.0%)" in text and "1 (25.0%)" in text and "+25.0 pts" in text
    quiet = next(line for line in text.splitlines() if "quiet" in line).split()
    assert quiet == ["quiet", "0", "0", "0", "0", "0", "0", "0", "0", "-"]


MESSAGE = {
    "version": 1, "messageId": "6f1c1d2e-9a0b-5c3d-8e4f-0a1b2c3d4e5f", "rule": "welcome",
    "kind": "welcome", "profileId": "3f2a9c1b-1111-4222-8333-944455556666", "channel": "email",
    "destination": {"type": "email", "value": "ada@example.com"}, "template": "welcome-v1",
    "emittedAt": "2026-03-02T12:00:05.123456Z",
}


def test_a_message_line_has_time_channel_destination_type_rule_profile_and_template():
    line = message_line(MESSAGE)
    assert line.split() == ["2026-03-02", "12:00:05Z", "email", "email", "welcome", "3f2a9c1b",
                            "welcome-v1"]
    assert "ada@example.com" not in line  # the person's address only with --json
    assert message_line({}).split() == ["-"] * 6


def test_tail_refuses_a_negative_max(runner):
    result = runner.invoke(main, ["messages", "tail", "--max", "-1"])
    assert result.exit_code == 2 and "--max" in result.stderr


def test_tail_says_which_kafka_it_cannot_reach(runner, monkeypatch):
    monkeypatch.setenv("STREAMS_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    result = runner.invoke(main, ["messages", "tail", "--max", "1"])
    assert result.exit_code == 1
    assert "cannot read messages.personalized from Kafka at 127.0.0.1:1" in result.stderr


def test_stats_on_an_unreachable_database_never_prints_the_password(runner, monkeypatch):
    monkeypatch.setenv("STREAMS_DATABASE_URL",
                       "postgresql://streams:hunter2-secret@127.0.0.1:1/streams")
    result = runner.invoke(main, ["triggers", "stats"])
    assert result.exit_code == 1
    assert "cannot read the schedule from postgresql+psycopg://streams:***@127.0.0.1:1" \
        in " ".join(result.stderr.split())
    assert "hunter2" not in result.output + result.stderr


def test_worker_refuses_a_bad_rules_file_naming_each_problem(tmp_path, monkeypatch):
    bad = tmp_path / "rules.toml"
    bad.write_text('[rules.x]\nkind = "welcome"\ndelay = "soon"\n')
    monkeypatch.setenv("STREAMS_TRIGGERS_FILE", str(bad))
    result = CliRunner().invoke(main, ["worker"])
    assert result.exit_code == 2
    assert "STREAMS_TRIGGERS_FILE" in result.output
    output = " ".join(result.output.split())  # rich wraps long lines
    assert "rule 'x': delay: must be a duration" in output
    assert "Traceback" not in result.output
