"""Proof that the reference checks can fail: deliberate mutants of the production fold,
each applied by monkeypatching, must each make the production state differ from the
independent reference on the drawn logs (``rich_logs``). Unit-level: the stage's own
decoding and ``replay`` in memory, no Kafka, no PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from streams.identity import logic as identity_logic
from streams.identity.models import IdentityRules
from streams.profiles import logic
from streams.reference import expected_state, state_diff
from tests.event_strategies import TEST_RULES, rich_logs
from tests.production_state import production_state

# Logs drawn per mutant before it counts as missed (derandomized: the same every run).
DRAWS = 120


def wrong_survivor(mp: pytest.MonkeyPatch) -> None:
    """Matched profiles merge into the greatest profile id, not the first created."""
    real = identity_logic.resolve

    class ById:
        def __init__(self, graph):
            self.graph = graph

        def __getattr__(self, name):
            return getattr(self.graph, name)

        def created_key(self, pid):
            return (pid, "")

    mp.setattr(logic, "resolve",
               lambda ids, graph, rules, **kw: real(ids, ById(graph), rules, **kw))


def tie_breaker_flipped(mp: pytest.MonkeyPatch) -> None:
    """Events at the same time are taken in descending message id."""
    def canonical(events):
        unique: dict = {}
        for e in events:
            unique.setdefault(e.message_id, e)
        by_id_desc = sorted(unique.values(), key=lambda e: e.message_id, reverse=True)
        return sorted(by_id_desc, key=lambda e: e.time)
    mp.setattr(logic, "canonical", canonical)


def duplicate_counted_twice(mp: pytest.MonkeyPatch) -> None:
    """A message id seen twice is folded twice."""
    mp.setattr(logic, "canonical", lambda events: sorted(events, key=lambda e: e.key))


def merge_not_audited(mp: pytest.MonkeyPatch) -> None:
    """Merges happen but are not recorded in ``profile_merges``."""
    real = logic.Graph.apply

    def apply(self, event, usable=None):
        before = len(self.new_merges)
        result = real(self, event, usable)
        del self.new_merges[before:]
        return result
    mp.setattr(logic.Graph, "apply", apply)


def recent_list_off_by_one(mp: pytest.MonkeyPatch) -> None:
    """The recently viewed list keeps 11 items instead of 10."""
    mp.setattr(logic, "RECENT_ITEMS", logic.RECENT_ITEMS + 1)


def limit_off_by_one(mp: pytest.MonkeyPatch) -> None:
    """Every per-type limit allows one identifier more."""
    real = IdentityRules.limit
    mp.setattr(IdentityRules, "limit", lambda self, id_type: real(self, id_type) + 1)


def lww_tie_flipped(mp: pytest.MonkeyPatch) -> None:
    """Last writer wins keeps the earlier write on ties and later ones alike."""
    def lww(target, name, value, key):
        current = target.get(name)
        if current is None or (current[1], current[2]) > key:
            target[name] = [value, key[0], key[1]]
    mp.setattr(logic, "_lww", lww)


def blocked_case_sensitive(mp: pytest.MonkeyPatch) -> None:
    """Blocked values compared case-sensitively (``NULL`` identifies someone)."""
    mp.setattr(IdentityRules, "is_blocked",
               lambda self, value: value in self.blocked_values or any(
                   p.fullmatch(value) for p in self._compiled))


MUTANTS: dict[str, Callable[[pytest.MonkeyPatch], None]] = {
    f.__name__: f for f in (wrong_survivor, tie_breaker_flipped, duplicate_counted_twice,
                            merge_not_audited, recent_list_off_by_one, limit_off_by_one,
                            lww_tie_flipped, blocked_case_sensitive)}


class Disagreement(Exception):
    """Production and reference differ on a drawn log (the diff is the message)."""


def first_disagreement(rules: IdentityRules) -> str | None:
    """The diff of the first drawn log on which production and reference disagree, or
    None when all ``DRAWS`` logs agree (the unmutated fold: ``test_reference.py``)."""

    @settings(max_examples=DRAWS, deadline=None, database=None, derandomize=True,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(log=rich_logs(rules=rules, max_size=30))
    def agree(log):
        problems = state_diff(expected_state(log, rules), production_state(log, rules),
                              dead=True)
        if problems:
            raise Disagreement(problems)

    try:
        agree()
    except Disagreement as found:
        return str(found)
    return None


@pytest.mark.parametrize("mutant", MUTANTS)
def test_mutant_is_caught(mutant, monkeypatch, capsys):
    with monkeypatch.context() as mp:
        MUTANTS[mutant](mp)
        problems = first_disagreement(TEST_RULES)
    with capsys.disabled():  # CI's output lists each mutant caught
        first = problems.splitlines()[0] if problems else "-"
        print(f"\nmutant {mutant}: {'caught' if problems else 'MISSED'} ({first})")
    assert problems, f"mutant {mutant} survived {DRAWS} drawn logs"
