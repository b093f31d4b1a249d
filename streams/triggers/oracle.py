"""The trigger stage's reference: which messages a log yields, computed the simple way.

Fold the whole log with the independent reference (``streams.reference``: no code of
the profile stage), plan every final person once at ``planned`` (before anything falls
due), then at ``now`` decide every intent due by then in the
order the emit loop claims them (due time, message id), each person's history growing
with what was sent. The running stage (incremental plans as events arrive in any order,
batches, merges, several workers) must emit exactly these documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from streams.events.time import parse_time
from streams.identity.models import IdentityRules
from streams.reference import Fact, expected_state
from streams.triggers.logic import decide_send, plan_schedules
from streams.triggers.models import Person, Send, SentRecord, TriggerEvent
from streams.triggers.rules import RuleSet


def expected_messages(records: Iterable[dict], rules: RuleSet, identity: IdentityRules,
                      planned: datetime, now: datetime) -> dict[str, dict]:
    """Message id -> document of every message the log's people are sent by ``now``.
    Pure; memory grows with the log (a test tool)."""
    state = expected_state(list(records), identity)
    by_profile: dict[str, list[TriggerEvent]] = {}
    for fact in sorted(state.facts.values(), key=lambda f: f.key):
        by_profile.setdefault(state.events[fact.message_id], []).append(trigger_event(fact))
    people = {pid: Person.from_profile(doc, by_profile.get(pid, ()))
              for pid, doc in state.profiles.items()}
    intents = sorted((i for p in people.values() for i in plan_schedules(p, rules, now=planned)),
                     key=lambda i: (i.due_at, i.message_id))
    history: dict[str, list[SentRecord]] = {}
    sent: dict[str, dict] = {}
    for intent in intents:
        if intent.due_at > now:
            continue
        person = people[intent.profile_id]
        past = history.setdefault(intent.profile_id, [])
        decision = decide_send(intent, person, past, rules, now)
        if isinstance(decision, Send):
            sent[intent.message_id] = decision.message
            past.append(SentRecord(now, decision.channel, intent.rule, intent.message_id))
    return sent


def trigger_event(fact: Fact) -> TriggerEvent:
    """What the rules read of one counted event, from the independent reference's facts
    (``anonymous_id``: the smallest anonymous id it carries, blocked ones included)."""
    anonymous = sorted(i.split(":", 1)[1] for i in fact.identifiers
                       if i.startswith("anonymous_id:"))
    return TriggerEvent(
        message_id=fact.message_id, time=parse_time(fact.time), type=fact.type,
        source=fact.source, channel=fact.channel, event=fact.name, category=fact.category,
        item=fact.item, device_id=fact.device.get("id"), device_type=fact.device.get("type"),
        anonymous_id=anonymous[0] if anonymous else None)
