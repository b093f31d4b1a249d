"""The rules file: the built-in file, durations, and errors naming the rule and field."""

from __future__ import annotations

from datetime import time, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.triggers.models import KINDS
from streams.triggers.rules import (
    RulesError,
    builtin_rules_path,
    format_duration,
    load_rules,
    parse_duration,
    parse_rules,
)

MINIMAL = '[rules.hello]\nkind = "welcome"\ntemplate = "t"\n'


def problems(text: str) -> list[str]:
    with pytest.raises(RulesError) as caught:
        parse_rules(text, "rules.toml")
    assert str(caught.value).startswith("rules.toml: ")
    return caught.value.problems


def test_builtin_file_has_the_five_rules_of_the_issue():
    rules = load_rules()
    assert sorted(r.kind for r in rules.enabled()) == sorted(KINDS)
    assert rules.quiet_hours.start == time(22, 0) and rules.quiet_hours.end == time(8, 0)
    assert rules.rule("re_engagement").send_at == "best_hour"
    assert rules.rule("welcome").delay == timedelta(seconds=5)
    assert rules.source == str(builtin_rules_path())
    assert builtin_rules_path().is_file()
    listed = {row["name"]: row for row in rules.describe()}
    assert listed["re_engagement"]["inactive_for"] == "2w"
    assert listed["browse_abandonment"]["delay"] == "1h"


def test_defaults_of_a_minimal_rule():
    rules = parse_rules(MINIMAL)
    rule = rules.rule("hello")
    assert rule.name == "hello" and rule.enabled and rule.send_at == "due"
    assert rule.delay == timedelta(0) and rule.control_share == 0.0
    assert rules.caps.per_day == 3 and rules.default_locale == "en"


def test_errors_name_the_rule_and_the_field_all_at_once():
    found = problems(MINIMAL + 'delay = "soon"\nchannels = ["sms"]\ncolour = 1\n'
                     'control_share = 1.5\n')
    assert found == [
        "rule 'hello': delay: must be a duration like '30s', '2h', '7d', got 'soon'",
        "rule 'hello': channels.0: must be among email, push, watch, web, facebook, "
        "instagram, twitter, linkedin",
        "rule 'hello': control_share: input should be less than or equal to 1",
        "rule 'hello': colour: unknown field",
    ]


@pytest.mark.parametrize(("body", "expected"), [
    ('template = "t"', "rule 'x': kind: missing (one of welcome, browse_abandonment, "
                       "cross_device, re_engagement, social_follow_up)"),
    ('kind = "nag"\ntemplate = "t"', "rule 'x': kind: must be one of welcome, "
                                     "browse_abandonment, cross_device, re_engagement, "
                                     "social_follow_up"),
    ('kind = "re_engagement"\ntemplate = "t"', "rule 'x': inactive_for: missing"),
    ('kind = "cross_device"\ntemplate = "t"\nstarted = []',
     "rule 'x': started: list should have at least 1 item after validation, not 0"),
    ('kind = "social_follow_up"\ntemplate = "t"\nactions = ["poke"]',
     "rule 'x': actions.0: must be among like, share, comment, follow, mention, message"),
    ('kind = "welcome"\ntemplate = "t"\nexpires_after = "0s"',
     "rule 'x': expires_after: must be longer than 0s"),
    ('kind = "welcome"\ntemplate = "t"\ndelay = "53w"',
     "rule 'x': delay: must be at most 52 weeks, got '53w'"),
    ('kind = "welcome"\ntemplate = "t"\nchannels = ["email", "email"]',
     "rule 'x': channels: lists a channel twice"),
    ('kind = "welcome"\ntemplate = "t"\nsend_at = "noon"',
     "rule 'x': send_at: input should be 'due' or 'best_hour'"),
    ('kind = "welcome"', "rule 'x': template: missing"),
    ('kind = "welcome"\ntemplate = "t"\nname = "y"', "rule 'x': name: must equal the "
                                                    "table's key"),
])
def test_rule_errors(body, expected):
    assert expected in problems(f"[rules.x]\n{body}\n")


def test_global_errors():
    found = problems('quiet_hours = {start = "25:00"}\ncaps = {per_day = -1}\n'
                     'default_timezone = "Mars/Olympus"\n')
    assert "quiet_hours.start: must be a local time like '22:00', got '25:00'" in found
    assert "caps.per_day: input should be greater than or equal to 0" in found
    assert "default_timezone: unknown time zone 'Mars/Olympus'" in found
    assert problems("x = [")[0].startswith("not valid TOML: ")


def test_load_rules_from_a_file(tmp_path):
    path = tmp_path / "rules.toml"
    path.write_text(MINIMAL)
    assert load_rules(path).rule("hello").template == "t"
    with pytest.raises(RulesError, match="cannot read"):
        load_rules(tmp_path / "missing.toml")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("2h", 7200), ("1h30m", 5400), ("7d", 604800), ("2w", 1209600),
    (" 90 S ", 90), (45, 45)])
def test_durations(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("bad", ["", "soon", "5", "1y", "-3s", "h1", True, -1, 1.5, None])
def test_bad_durations(bad):
    with pytest.raises(ValueError, match="duration|52 weeks"):
        parse_duration(bad)


@given(st.integers(0, 52 * 7 * 86400))
def test_format_duration_reads_back(seconds):
    text = format_duration(timedelta(seconds=seconds))
    assert parse_duration(text) == timedelta(seconds=seconds)
