"""The ``messages.personalized`` document: everything a sender needs, nothing to look up.

Its JSON Schema is ``schemas/v1/message.json``. Pure; ``now`` explicit.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from streams.triggers.channels import ChannelChoice
from streams.triggers.models import Intent, Person, iso
from streams.triggers.rules import AnyRule, RuleSet, format_duration
from streams.triggers.timing import SendTime

MESSAGE_VERSION = 1
MAX_RECOMMENDATIONS = 5
_PAST = {"like": "liked", "share": "shared", "comment": "commented on",
         "follow": "followed", "mention": "mentioned", "message": "messaged"}


def _recommend(intent: Intent, person: Person) -> list[dict[str, Any]]:
    facts = intent.facts
    out: list[dict[str, Any]] = []

    def add(item: str | None, category: str | None, reason: str) -> None:
        if any(r["item"] == item and r["category"] == category for r in out):
            return
        out.append({"item": item, "category": category, "reason": reason})

    if intent.kind == "browse_abandonment":
        category = facts.get("category")
        for item in facts.get("items") or []:
            add(item, category, f"because you viewed {item}")
        if category and not out:
            add(None, category, f"because you browsed {category}")
    elif intent.kind == "cross_device" and (facts.get("item") or facts.get("category")):
        # Something to recommend only when the start named an item or a category (the
        # "why" block says what was started in any case).
        what = facts.get("item") or facts.get("category")
        add(facts.get("item"), facts.get("category"),
            f"because you started {what} on your {facts.get('device') or 'other device'}")
    elif intent.kind == "social_follow_up" and facts.get("item"):
        verb = _PAST.get(facts.get("action") or "", "interacted with")
        add(facts["item"], None, f"because you {verb} {facts['item']} on {facts.get('channel')}")
    # Then what the person is into, until there are MAX_RECOMMENDATIONS: nothing later
    # can change the first ones (the rest is not even sorted).
    for item, category, reason in _interests(person):
        if len(out) >= MAX_RECOMMENDATIONS:
            break
        add(item, category, reason)
    return out[:MAX_RECOMMENDATIONS]


def _interests(person: Person) -> Iterator[tuple[str | None, str | None, str]]:
    """What the person is into, best first, as (item, category, reason): recently viewed
    items, strongest interests, then the categories they said they like. Lazy."""
    for item in person.recent_items:
        yield item, None, f"because you viewed {item}"
    if person.item_affinity:
        for item, _ in sorted(person.item_affinity.items(), key=lambda kv: (-kv[1], kv[0])):
            yield item, None, f"because you showed interest in {item}"
    stated = person.preferences.get("categories")
    for category in stated if isinstance(stated, list) else []:
        if isinstance(category, str):
            yield None, category, f"because you told us you like {category}"


def summary(intent: Intent) -> str:
    """One sentence saying why the rule fired, for a person reading ``why``."""
    f = intent.facts
    if intent.kind == "welcome":
        return f"First interaction: {f.get('firstEvent')} from {f.get('source')}."
    if intent.kind == "browse_abandonment":
        what = f"{f.get('scope')} {f.get(f.get('scope') or 'category')}"
        return f"Viewed {what} {f.get('views')} times within {f.get('lookback')} " \
               "without the goal event."
    if intent.kind == "cross_device":
        return f"Started {f.get('started')} on {f.get('device')} and did not finish it."
    if intent.kind == "re_engagement":
        return f"No activity for {f.get('inactiveFor')} since {f.get('lastActivity')}."
    return f"{str(f.get('action')).capitalize()} on {f.get('channel')}: {f.get('event')}."


def render_message(intent: Intent, person: Person, rule: AnyRule, rules: RuleSet,
                   choice: ChannelChoice, timing: SendTime, now: datetime) -> dict[str, Any]:
    """The message document for ``intent`` sent on ``choice`` at ``now``, rendered from
    the current profile. Raises ValueError when no channel was chosen."""
    if choice.chosen is None or choice.destination is None:
        raise ValueError("render_message needs a chosen channel and destination")
    by_id = {e.message_id: e for e in person.events}
    events = [by_id[m].to_why() if m in by_id else {"messageId": m}
              for m in intent.trigger_events]
    due = iso(intent.due_at)
    return {
        "version": MESSAGE_VERSION,
        "messageId": intent.message_id,
        "rule": intent.rule,
        "kind": intent.kind,
        "profileId": person.profile_id,
        "channel": choice.chosen,
        "destination": dict(choice.destination),
        "template": rule.template,
        "locale": person.locale or rules.default_locale,
        "personalization": {
            "name": person.name,
            "preferences": dict(person.preferences),
            "recommendations": _recommend(intent, person),
        },
        "dueAt": due,
        "expiresAt": iso(intent.expires_at),
        "emittedAt": iso(now),
        "why": {
            "summary": summary(intent),
            "trigger": dict(intent.facts),
            "events": events,
            "channel": choice.to_why(),
            "time": {
                "triggeredAt": iso(intent.trigger_time),
                "delay": format_duration(rule.delay),
                "dueAt": due,
                "timezone": timing.zone,
                "sendAt": rule.send_at,
                "bestHour": timing.best_hour,
                "quietHours": timing.quiet.to_json() if timing.quiet else None,
                "heldUntil": iso(timing.held_until) if timing.held_until else None,
            },
        },
    }
