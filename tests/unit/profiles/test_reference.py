"""The production fold against the independent reference (``streams.reference``), in
memory: the whole state (profiles, identifier owners, merges, where each event counts,
skipped events, redirects, dead letters), with the tight test rules and the production
defaults; and proof that the generated logs reach every rule."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import HealthCheck, event, given, settings, target

from streams.identity.models import IdentityRules
from streams.reference import expected_state, state_diff
from tests.event_strategies import DEFAULT_RULES, RULES_REACHED, TEST_RULES, rich_logs
from tests.long_profile import examples
from tests.production_state import production_state

RULE_SETS = {"test_rules": TEST_RULES, "defaults": DEFAULT_RULES}
# Draws per rule set of the coverage test (derandomized: the same logs on every run).
COVERAGE_DRAWS = examples(100, 400)


def note_reached(reached: Counter, steer: bool = True) -> None:
    """Hypothesis statistics (``--hypothesis-show-statistics``): which rules this log
    reached; with ``steer``, how many merges it made (``target`` steers towards more)."""
    for rule in RULES_REACHED:
        if reached.get(rule):
            event(f"reached {rule}")
    if steer:
        target(float(reached.get("merge", 0)), label="merges")


@pytest.mark.parametrize("rules_name", RULE_SETS)
def test_production_fold_equals_the_reference(rules_name):
    rules = RULE_SETS[rules_name]

    @settings(max_examples=examples(40, 500), deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(log=rich_logs(rules=rules))
    def check(log):
        want = expected_state(log, rules)
        note_reached(want.reached)
        problems = state_diff(want, production_state(log, rules), dead=True)
        assert not problems, problems

    check()


@pytest.mark.parametrize("rules_name", RULE_SETS)
def test_generated_logs_reach_every_rule(rules_name, capsys):
    rules = RULE_SETS[rules_name]
    reached: Counter = Counter()

    @settings(max_examples=COVERAGE_DRAWS, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(log=rich_logs(rules=rules, forgets=True))
    def draw(log):
        state = expected_state(log, rules)
        note_reached(state.reached, steer=False)  # the draws as the other tests see them
        reached.update({rule for rule in state.reached if rule in RULES_REACHED})

    draw()
    with capsys.disabled():  # shown in CI's output
        print(f"\nrules reached with {rules_name} (logs of {COVERAGE_DRAWS}): " + ", ".join(
            f"{rule} {reached[rule]}" for rule in RULES_REACHED))
    missing = [rule for rule in RULES_REACHED if not reached[rule]]
    assert not missing, f"no drawn log reached {missing}"


def test_a_limit_tie_between_custom_types_names_the_first_type_by_name():
    """Custom types share one rank; which one a note names must not depend on the order
    identifiers are met in (a set's order changes with the hash seed)."""
    from streams.identity.logic import _violation

    rules = IdentityRules(default_limit=1)
    met = ["zz_id:1", "zz_id:2", "aa_id:1", "aa_id:2"]
    assert _violation(met, rules) == "limit:aa_id"
    assert _violation(list(reversed(met)), rules) == "limit:aa_id"
