"""Pure logic of the trigger stage: plan schedules from events, decide at send time.

No Kafka, no SQL, no clock: typed values and an explicit ``now`` in, plans and
decisions out.

Order independence. ``plan_schedules`` reads only the *set* of a person's events (a
``Person`` keeps them in canonical order, time then message id, without duplicates) and
the rules, so the schedule, and the messages emitted from it, depend only on the event
log. Message ids derive from the rule and the triggering events, never from the profile
id, so merges and renames keep them. The store inserts what is planned (an existing id
is left alone) and cancels pending rows that are no longer planned (``cancel_reason``).
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from streams.triggers.channels import choose_channel
from streams.triggers.models import (
    Cancel,
    Decision,
    EventKey,
    Hold,
    HoldOut,
    Intent,
    Person,
    Send,
    SentRecord,
    Suppress,
    TriggerEvent,
    frozen_record,
    iso,
    message_id_for,
)
from streams.triggers.render import render_message
from streams.triggers.rules import AnyRule, RuleSet, format_duration
from streams.triggers.timing import active_hours, best_hour, quiet_for, send_time, zone_of


def normalize_name(name: str | None) -> str:
    """An event name for matching: lower case, ``_``/``-`` as spaces, single spaces."""
    return " ".join((name or "").lower().replace("_", " ").replace("-", " ").split())


def _named(events: Iterable[TriggerEvent], names: Iterable[str]) -> list[TriggerEvent]:
    wanted = {normalize_name(n) for n in names}
    return [e for e in events if e.type == "track" and normalize_name(e.event) in wanted]


def goal_events(rule: AnyRule, events: Iterable[TriggerEvent]) -> list[TriggerEvent]:
    """The events that count as the rule's goal: for re-engagement any activity, for the
    others a track event named in ``goal`` (cross-device: or in ``finished``)."""
    if rule.kind == "re_engagement":
        return [e for e in events if e.behavioural]
    names = list(rule.goal) + (list(rule.finished) if rule.kind == "cross_device" else [])
    return _named(events, names)


def address(event: TriggerEvent) -> str | None:
    """The destination an event's own channel would use: device id (push, watch), the
    anonymous id (web), None otherwise."""
    origin = event.origin
    if origin in ("push", "watch"):
        return event.device_id
    if origin == "web":
        return event.anonymous_id
    return None


class Candidate(NamedTuple):
    """A moment a rule would fire, before exit conditions and re-eligibility. (A named
    tuple: the emit loop re-plans a rule for every message, and a frozen dataclass costs
    a microsecond more to build.)"""

    trigger_time: datetime
    after: EventKey  # goal events after this key (and by the due time) exit
    event_ids: tuple[str, ...]
    scope: str
    origin: TriggerEvent
    facts: dict[str, Any]


def _welcome(events: tuple[TriggerEvent, ...], rule: AnyRule) -> list[Candidate]:
    # Only the person's earliest event: when a newcomer is merged into a known person,
    # the earliest is the known person's and the newcomer's welcome is no longer planned.
    if not events:
        return []
    first = events[0]
    return [Candidate(first.time, first.key, (first.message_id,), "first", first,
                      {"firstEvent": first.event or first.type, "source": first.source})]


def _browse(events: tuple[TriggerEvent, ...], rule: AnyRule) -> list[Candidate]:
    goals = [g.key for g in goal_events(rule, events)]
    out = []
    for scope in rule.scopes:
        seen: dict[str, list[TriggerEvent]] = defaultdict(list)
        start: dict[str, int] = defaultdict(int)
        for view in events:
            value = view.category if scope == "category" else view.item
            if not view.viewed or not value:
                continue
            history = seen[value]
            history.append(view)
            # Views count within the lookback and since the last goal event only.
            i = bisect_right(goals, view.key)
            last_goal = goals[i - 1] if i else None
            begin = start[value]
            while begin < len(history) and (
                    history[begin].time <= view.time - rule.lookback
                    or (last_goal is not None and history[begin].key <= last_goal)):
                begin += 1
            start[value] = begin
            window = history[begin:]
            if len(window) < rule.min_views:
                continue
            made_it = window[-rule.min_views:]
            items = list(dict.fromkeys(e.item for e in reversed(window) if e.item))
            out.append(Candidate(
                view.time, view.key, tuple(e.message_id for e in made_it),
                f"{scope}:{value}", view,
                {"scope": scope, scope: value, "views": len(window),
                 "lookback": format_duration(rule.lookback), "items": items[:10]}))
    return out


def _cross_device(events: tuple[TriggerEvent, ...], rule: AnyRule) -> list[Candidate]:
    addresses = {(e.origin, address(e)) for e in events
                 if e.behavioural and e.origin in ("push", "watch", "web") and address(e)}
    out = []
    for started in _named(events, rule.started):
        here = (started.origin, address(started))
        if not any(a != here for a in addresses):
            continue  # no other device to continue on
        out.append(Candidate(
            started.time, started.key, (started.message_id,), "started", started,
            {"started": started.event, "item": started.item, "category": started.category,
             "device": started.device_type or started.origin or started.source}))
    return out


def _re_engagement(events: tuple[TriggerEvent, ...], rule: AnyRule) -> list[Candidate]:
    # Every activity is a candidate, due when the person has been away for
    # ``inactive_for``; activity after it exits, so only the gaps survive and new
    # activity replaces the pending one.
    return [Candidate(e.time + rule.inactive_for, e.key, (e.message_id,), "inactive", e,
                      {"lastActivity": iso(e.time), "lastEvent": e.event or e.type,
                       "inactiveFor": format_duration(rule.inactive_for)})
            for e in events if e.behavioural]


def _social(events: tuple[TriggerEvent, ...], rule: AnyRule) -> list[Candidate]:
    return [Candidate(e.time, e.key, (e.message_id,), "social", e,
                      {"action": e.action, "channel": e.channel, "event": e.event,
                       "item": e.item})
            for e in events if e.action in rule.actions]


_CANDIDATES = {"welcome": _welcome, "browse_abandonment": _browse,
               "cross_device": _cross_device, "re_engagement": _re_engagement,
               "social_follow_up": _social}


def _exits(rule: AnyRule) -> bool:
    return rule.kind == "re_engagement" or rule.exit_on_goal


def _first_goal_after(goals: list[EventKey], after: EventKey) -> EventKey | None:
    i = bisect_right(goals, after)
    return goals[i] if i < len(goals) else None


def _goal_keys(rule: AnyRule, person: Person) -> list[EventKey]:
    return sorted(g.key for g in goal_events(rule, person.events))


def _chosen(person: Person, rule: AnyRule,
            goals: list[EventKey] | None = None) -> list[Candidate]:
    """The candidates of one rule that become intents: those no goal event exits before
    they are due, thinned by re-eligibility. ``goals``: ``_goal_keys(rule, person)``
    when the caller has them."""
    events = person.events
    if not _exits(rule):
        goals = []
    elif goals is None:
        goals = _goal_keys(rule, person)
    kept = _CANDIDATES[rule.kind](events, rule)
    if goals:
        delay = rule.delay
        kept = [cand for cand in kept
                # out: the person did what the message was for before it was due
                if (goal := _first_goal_after(goals, cand.after)) is None
                or goal[0] > cand.trigger_time + delay]
    # A total order on the candidates' own facts (ids are hashed only for those kept).
    if len(kept) > 1:
        kept.sort(key=lambda c: (c.trigger_time, c.scope, sorted(c.event_ids)))
    chosen: list[Candidate] = []
    last: datetime | None = None
    for cand in kept:
        # Re-eligibility: at most one message per window, windows chained from the
        # earliest candidate, so the choice depends only on the set of candidates.
        if last is not None and cand.trigger_time < last + rule.reeligible_after:
            continue
        last = cand.trigger_time
        chosen.append(cand)
    return chosen


def plan_rule(person: Person, rule: AnyRule) -> list[Intent]:
    """The intents of one rule for a person (see ``plan_schedules``)."""
    intents: list[Intent] = []
    for cand in _chosen(person, rule):
        due = cand.trigger_time + rule.delay
        intents.append(Intent(
            message_id=message_id_for(rule.name, cand.scope, cand.event_ids),
            rule=rule.name, kind=rule.kind,
            profile_id=person.profile_id, trigger_events=tuple(sorted(cand.event_ids)),
            trigger_time=cand.trigger_time, due_at=due, expires_at=due + rule.expires_after,
            exit_after=cand.after, origin_channel=cand.origin.origin,
            origin_device=address(cand.origin), facts=cand.facts))
    return intents


def still_planned(intent: Intent, person: Person, rule: AnyRule) -> bool:
    """True when ``plan_rule(person, rule)`` still has ``intent``'s message id: the same
    answer, without building the intents (the emit loop asks it of every message), and
    hashing only a candidate with the intent's own triggering events."""
    return _still_planned(intent, person, rule, None)


def _still_planned(intent: Intent, person: Person, rule: AnyRule,
                   goals: list[EventKey] | None) -> bool:
    for c in _chosen(person, rule, goals):
        if tuple(sorted(c.event_ids)) == intent.trigger_events \
                and message_id_for(rule.name, c.scope, c.event_ids) == intent.message_id:
            return True
    return False


def plan_schedules(person: Person, rules: RuleSet, *,
                   now: datetime | None = None) -> list[Intent]:
    """Every message the enabled rules want for ``person`` given all their events, by
    due time. A function of the set of events only (not their order or duplicates).
    With ``now``, intents already expired at ``now`` are left out (so a replay of old
    events schedules nothing stale). A forgotten person gets nothing. Pure."""
    if person.forgotten:
        return []
    intents = [i for rule in rules.enabled() for i in plan_rule(person, rule)]
    if now is not None:
        intents = [i for i in intents if i.expires_at > now]
    return sorted(intents, key=lambda i: (i.due_at, i.message_id))


def cancel_reason(intent: Intent, person: Person, rules: RuleSet,
                  now: datetime | None = None) -> str | None:
    """Why a scheduled ``intent`` is no longer wanted, or None when it still is:
    ``disabled`` (its rule is gone or off), ``exit`` (a goal event after the trigger,
    by ``now`` or else by the due time), ``superseded`` (no longer planned: a merge
    found an earlier first event, later activity, an earlier window). Pure."""
    return _cancel_reason(intent, person, rules.rule(intent.rule), now)


def _cancel_reason(intent: Intent, person: Person, rule: AnyRule | None,
                   now: datetime | None) -> str | None:
    if rule is None or not rule.enabled or rule.kind != intent.kind:
        return "disabled"
    goals = None
    if _exits(rule):
        goals = _goal_keys(rule, person)  # re-planning below reads them too
        goal = _first_goal_after(goals, intent.exit_after)
        if goal is not None and goal[0] <= max(intent.due_at, now or intent.due_at):
            return "exit"
    if not _still_planned(intent, person, rule, goals):
        return "superseded"
    return None


def in_control_group(profile_id: str, rule: str, share: float) -> bool:
    """True when the person is in the rule's control group: a stable hash of the rule
    and profile id, as a fraction of 1, falls below ``share``."""
    if share <= 0:
        return False
    digest = hashlib.sha256(f"{rule}\x1f{profile_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < share


def _cap(history: Iterable[SentRecord], rule: AnyRule, rules: RuleSet,
         now: datetime) -> str | None:
    day = week = 0
    for record in history:
        if record.sent_at > now:
            continue
        if now - record.sent_at < timedelta(days=1):
            day += 1
        if now - record.sent_at < timedelta(days=7):
            week += 1
        if record.rule == rule.name and now - record.sent_at < rule.reeligible_after:
            return (f"rule {rule.name!r} sent at {iso(record.sent_at)}; re-eligible after "
                    f"{format_duration(rule.reeligible_after)}")
    if day >= rules.caps.per_day:
        return f"{day} messages in the last day (cap {rules.caps.per_day})"
    if week >= rules.caps.per_week:
        return f"{week} messages in the last week (cap {rules.caps.per_week})"
    return None


def decide_send(intent: Intent, person: Person, history: Iterable[SentRecord],
                rules: RuleSet, now: datetime) -> Decision:
    """What to do with a scheduled message at ``now``, re-checking everything against
    the current profile: forgotten, rule off, already sent, expired, exit, superseded,
    not yet due, channel consent, best hour and quiet hours (a ``Hold`` until then, or a
    suppression when that is past the expiry), frequency caps and re-eligibility from
    ``history`` (messages sent to the person, all rules and channels), then the control
    group (checked last, so the held-out are exactly those who would have been sent).
    Returns ``Send`` with the rendered document otherwise. Pure; does not block."""
    history = list(history)
    if person.forgotten:
        return Suppress("forgotten")
    rule = rules.rule(intent.rule)
    reason = _cancel_reason(intent, person, rule, now)
    if rule is None or reason == "disabled":
        return Cancel("disabled", f"rule {intent.rule!r} is not enabled")
    for record in history:
        if record.message_id == intent.message_id:
            return Suppress("duplicate", f"already sent on {record.channel}")
    if now >= intent.expires_at:
        return Suppress("expired", f"expired at {iso(intent.expires_at)}")
    if reason is not None:
        return Cancel(reason)
    if now < intent.due_at:
        return Hold(intent.due_at, "due")
    choice = choose_channel(rule.channels, rule.prefer_origin, intent, person, now)
    if choice.chosen is None:
        return Suppress("consent", "; ".join(f"{c}: {why}" for c, why in
                                             sorted(choice.excluded.items())))
    zone_name, tz = zone_of(person, rules.default_timezone)
    quiet = (quiet_for(person, rules.quiet_hours.start, rules.quiet_hours.end)
             if rule.quiet_hours else None)
    best = best_hour(active_hours(person, tz, now), quiet) if rule.send_at == "best_hour" \
        else None
    timing = send_time(intent.due_at, intent.expires_at, now, zone_name, tz, quiet, best)
    if timing.at >= intent.expires_at:
        if timing.reason == "quiet_hours":
            return Suppress("quiet_hours", f"quiet hours end after the expiry "
                                           f"{iso(intent.expires_at)}")
        return Suppress("expired", f"expired at {iso(intent.expires_at)}")
    if timing.at > now:
        return Hold(timing.at, timing.reason)
    capped = _cap(history, rule, rules, now)
    if capped is not None:
        return Suppress("cap", capped)
    if in_control_group(person.profile_id, rule.name, rule.control_share):
        return HoldOut(now, choice.chosen)
    message = render_message(intent, person, rule, rules, choice, timing, now)
    return frozen_record(Send, {"channel": choice.chosen,
                                "destination": choice.destination or {}, "message": message})


def converted(at: datetime, rule: AnyRule, events: Iterable[TriggerEvent]) -> bool:
    """True when a goal event of the rule (re-engagement: any activity) happened within
    the rule's conversion window after ``at`` (the send, or the held-out moment)."""
    end = at + rule.conversion_window
    return any(at < e.time <= end for e in goal_events(rule, events))


def outcome(decision: Decision) -> tuple[str, str | None]:
    """A decision as the (status, reason) the store records: ``sent``, ``held``,
    ``held_out``, ``suppressed`` or ``cancelled``, with the reason where there is one."""
    if isinstance(decision, Send):
        return "sent", None
    if isinstance(decision, Hold):
        return "held", decision.reason
    if isinstance(decision, HoldOut):
        return "held_out", None
    return ("suppressed" if isinstance(decision, Suppress) else "cancelled"), decision.reason


@dataclass
class RuleStats:
    """Per-rule figures: scheduled (every intent stored), sent, held out, cancelled and
    suppressed by reason, conversions after a send and after a hold-out."""

    rule: str
    scheduled: int = 0
    pending: int = 0
    sent: int = 0
    held_out: int = 0
    cancelled: dict[str, int] = field(default_factory=dict)
    suppressed: dict[str, int] = field(default_factory=dict)
    converted_sent: int = 0
    converted_held_out: int = 0

    @property
    def lift(self) -> float | None:
        """Conversion rate of the sent minus that of the held out (None without both)."""
        if not self.sent or not self.held_out:
            return None
        return self.converted_sent / self.sent - self.converted_held_out / self.held_out

    def to_json(self) -> dict[str, Any]:
        """The figures as a JSON-able dict (for /ops, /metrics and the CLI)."""
        return {"rule": self.rule, "scheduled": self.scheduled, "pending": self.pending,
                "sent": self.sent, "heldOut": self.held_out, "cancelled": self.cancelled,
                "suppressed": self.suppressed, "convertedSent": self.converted_sent,
                "convertedHeldOut": self.converted_held_out, "lift": self.lift}


def tally(rows: Iterable[Mapping[str, Any]], rules: RuleSet | None = None) -> list[RuleStats]:
    """Per-rule stats from schedule rows ``{"rule", "status", "reason", "converted"}``,
    each standing for ``count`` rows when it has one (the store's grouped counts)
    (status: pending or held count as pending; sent, held_out, suppressed, cancelled).
    Every rule of ``rules`` appears, even with nothing scheduled."""
    stats = {name: RuleStats(name) for name in (rules.rules if rules else ())}
    for row in rows:
        n = int(row.get("count", 1))
        entry = stats.setdefault(row["rule"], RuleStats(row["rule"]))
        entry.scheduled += n
        status, reason = row["status"], row.get("reason") or "unknown"
        converted = n if row.get("converted") else 0
        if status in ("pending", "held"):
            entry.pending += n
        elif status == "sent":
            entry.sent += n
            entry.converted_sent += converted
        elif status == "held_out":
            entry.held_out += n
            entry.converted_held_out += converted
        elif status in ("suppressed", "cancelled"):
            bucket = entry.suppressed if status == "suppressed" else entry.cancelled
            bucket[reason] = bucket.get(reason, 0) + n
    return [stats[name] for name in sorted(stats)]
