"""The trigger stage's reference: which messages a log yields, computed the simple way.

Fold the whole log with the profiles' oracle, plan every final person once at ``planned``
(before anything falls due), then at ``now`` decide every intent due by then in the
order the emit loop claims them (due time, message id), each person's history growing
with what was sent. The running stage (incremental plans as events arrive in any order,
batches, merges, several workers) must emit exactly these documents.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from streams.identity.models import IdentityRules
from streams.profiles.decode import decode_envelope
from streams.profiles.logic import canonical, replay
from streams.profiles.models import FoldEvent
from streams.triggers.logic import decide_send, plan_schedules
from streams.triggers.models import Person, Send, SentRecord
from streams.triggers.rules import RuleSet


def expected_messages(records: Iterable[dict], rules: RuleSet, identity: IdentityRules,
                      planned: datetime, now: datetime) -> dict[str, dict]:
    """Message id -> document of every message the log's people are sent by ``now``.
    Pure; memory grows with the log (a test tool)."""
    events = [e for e in (decode_envelope(r) for r in records) if isinstance(e, FoldEvent)]
    graph = replay(events, identity)
    by_profile: dict[str, list[dict]] = {}
    for event in canonical(events):
        pid = graph.final_profile_of(event.message_id)
        if pid is not None:
            by_profile.setdefault(pid, []).append(event.to_json())
    people = {pid: Person.from_profile(doc, by_profile.get(pid, ()))
              for pid, doc in graph.profiles.items()}
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
