"""Identity resolution rules: normalization, blocking, limits, merge cap, survivor."""

from __future__ import annotations

import pytest

from streams.identity.logic import (
    canonical_type,
    normalize_value,
    resolve,
    usable_identifiers,
)
from streams.identity.models import IdentityRules


class FakeGraph:
    """A tiny GraphView: profiles as {id: (created_key, identifiers, merges)}."""

    def __init__(self, profiles: dict[str, tuple[tuple[str, str], list[str], int]]):
        self.profiles = profiles
        self.owners = {i: pid for pid, (_, ids, _) in profiles.items() for i in ids}

    def owner(self, identifier):
        return self.owners.get(identifier)

    def identifiers_of(self, pid):
        return self.profiles[pid][1]

    def merge_count(self, pid):
        return self.profiles[pid][2]

    def created_key(self, pid):
        return self.profiles[pid][0]


RULES = IdentityRules()


@pytest.mark.parametrize(("id_type", "raw", "expected"), [
    ("email", "  Ann@Example.TEST ", "ann@example.test"),
    ("email", "not-an-email", None),
    ("phone", "+33 (0)6-12.34.56.78", "+330612345678"),
    ("phone", "0033 612345678", "+33612345678"),
    ("phone", "12-3", None),
    ("twitter_handle", "@Ada", "ada"),
    ("user_id", 42, "42"),
    ("user_id", True, None),
    ("anonymous_id", "  a-1 ", "a-1"),
])
def test_normalize_value(id_type, raw, expected):
    assert normalize_value(id_type, raw) == expected


def test_canonical_type_maps_social_and_builtin_names():
    assert canonical_type("Twitter") == "twitter_id"
    assert canonical_type("instagram_handle") == "instagram_handle"
    assert canonical_type("userId") == "user_id"
    assert canonical_type("crm_id") == "crm_id"
    assert canonical_type("bad type!") is None


@pytest.mark.parametrize("value", ["", "null", "NULL", "undefined", "0", "anonymous",
                                   "0000", "00000000-0000-0000-0000-000000000000"])
def test_default_blocked_values(value):
    assert RULES.is_blocked(value)


def test_custom_blocked_regex_and_exact():
    rules = IdentityRules(blocked_values=frozenset({"guest"}), blocked_patterns=(r"test-.*",))
    assert rules.is_blocked("Guest") and rules.is_blocked("test-123")
    assert not rules.is_blocked("null")  # replaced the defaults
    assert usable_identifiers(["user_id:guest", "user_id:u1", "anonymous_id:test-9"],
                              rules) == ["user_id:u1"]


def test_bad_rules_are_named():
    with pytest.raises(ValueError, match="not a regex"):
        IdentityRules(blocked_patterns=("(",))
    with pytest.raises(ValueError, match="limit for email"):
        IdentityRules(limits={"email": 0})


def test_usable_identifiers_sorted_by_priority_and_forgotten_removed():
    ids = ["anonymous_id:a", "device_id:d", "user_id:u", "crm_id:c", "email:e@x.y"]
    assert usable_identifiers(ids, RULES, frozenset({"email:e@x.y"})) == [
        "user_id:u", "crm_id:c", "device_id:d", "anonymous_id:a"]


def test_new_identifiers_make_a_new_profile():
    res = resolve(["anonymous_id:a"], FakeGraph({}), RULES)
    assert res.target is None and res.added == ("anonymous_id:a",) and not res.merged


def test_matching_one_profile_adds_new_identifiers():
    graph = FakeGraph({"p1": (("t1", "m1"), ["anonymous_id:a"], 0)})
    res = resolve(["anonymous_id:a", "user_id:u"], graph, RULES)
    assert res.target == "p1" and res.added == ("user_id:u",) and not res.merged


def test_matching_several_merges_into_the_earliest_created():
    graph = FakeGraph({
        "p-late": (("2026-01-02", "m0"), ["anonymous_id:a"], 0),
        "p-early": (("2026-01-01", "m9"), ["device_id:d"], 0),
    })
    res = resolve(["anonymous_id:a", "device_id:d"], graph, RULES)
    assert res.target == "p-early" and res.merged == ("p-late",)


def test_limit_breach_drops_lowest_priority_identifier_and_resolves_again():
    graph = FakeGraph({"p1": (("t", "m"), ["user_id:u1", "anonymous_id:a"], 0)})
    res = resolve(["anonymous_id:a", "user_id:u2"], graph, RULES)
    assert res.target is None  # u2 alone: a new profile
    assert res.added == ("user_id:u2",)
    assert [(d.identifier, d.rule) for d in res.dropped] == [("anonymous_id:a", "limit:user_id")]


def test_limit_breach_keeps_dropping_until_it_fits():
    graph = FakeGraph({"p1": (("t", "m"), ["user_id:u1", "device_id:d"], 0)})
    res = resolve(["anonymous_id:new", "device_id:d", "user_id:u2"], graph, RULES)
    assert res.target is None and res.added == ("user_id:u2",)
    assert [d.identifier for d in res.dropped] == ["anonymous_id:new", "device_id:d"]


def test_merge_cap_stops_merging():
    rules = IdentityRules(merge_cap=1)
    graph = FakeGraph({
        "p1": (("t1", "m1"), ["anonymous_id:a"], 1),
        "p2": (("t2", "m2"), ["device_id:d"], 0),
    })
    res = resolve(["anonymous_id:a", "device_id:d"], graph, rules)
    assert res.target == "p2" and not res.merged  # anonymous_id dropped, device kept
    assert [(d.identifier, d.rule) for d in res.dropped] == [("anonymous_id:a", "merge_cap")]


def test_resolve_needs_an_identifier():
    with pytest.raises(ValueError, match="at least one usable identifier"):
        resolve([], FakeGraph({}), RULES)
