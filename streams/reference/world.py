"""The reference run: the whole log read in log order (dead letters, duplicates, skips,
forgets), then every accepted event resolved in canonical order, once, with plain loops.

The rules are those of ``docs/profiles.md`` ("Rules", "Forgetting"); ``reached`` counts
which of them a log exercised, so that generators can show they reach every rule.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from streams.reference.documents import RECENT_KEPT, document, viewed
from streams.reference.facts import Fact, read_record
from streams.reference.rules import Rules

# Profile ids are UUIDv5 of the creating event's message id in this namespace.
NAMESPACE = uuid.UUID("6f1d1c9e-52a4-4b8e-9a57-0c6c4bd7d2a1")


def profile_id(message_id: str) -> str:
    """The id of the profile an event creates."""
    return str(uuid.uuid5(NAMESPACE, message_id))


@dataclass(frozen=True)
class Forget:
    """A log entry standing for ``DELETE /v1/profiles/{id}`` of the profile that holds
    ``identifier`` at that point of the log (nothing when no profile holds it)."""

    identifier: str


@dataclass
class State:
    """The whole state a log leaves: what the PostgreSQL tables must hold.

    ``profiles`` by id; ``owners`` identifier -> profile id, or None for an identifier
    only ever dropped by a rule; ``merges`` (survivor, merged, message id, rule, event
    time), sorted; ``events`` message id -> the profile it counts in; ``skipped`` message
    id -> reason; ``redirects`` the merged-away ids -> their live profile (required);
    ``allowed_redirects`` what a redirect may also hold: the id an event would create ->
    the profile that event counts in (a replay may rename such a profile); ``dead`` (log
    position, reason); ``forgotten`` SHA-256 digests; ``reached`` rules exercised;
    ``facts`` the counted events (by message id), for references of later stages.
    """

    profiles: dict[str, dict] = field(default_factory=dict)
    owners: dict[str, str | None] = field(default_factory=dict)
    merges: list[tuple] = field(default_factory=list)
    events: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    allowed_redirects: dict[str, str] = field(default_factory=dict)
    dead: list[tuple[int, str]] = field(default_factory=list)
    forgotten: set[bytes] = field(default_factory=set)
    reached: Counter = field(default_factory=Counter)
    facts: dict[str, Fact] = field(default_factory=dict)


def usable(fact: Fact, rules: Rules, forgotten: set[str]) -> list[str]:
    """The identifiers that take part in matching, highest priority first."""
    kept = [i for i in fact.identifiers
            if not rules.blocked(i.partition(":")[2]) and i not in forgotten]
    return sorted(kept, key=rules.order)


def broken_rule(identifiers: Iterable[str], rules: Rules) -> str | None:
    """``limit:<type>`` for the highest-priority type with more identifiers than its
    limit (ties: by type name), or None."""
    per_type = Counter(i.partition(":")[0] for i in identifiers)
    over = sorted((rules.order(f"{t}:")[:2] for t, n in per_type.items()
                   if n > rules.limit_of(t)))
    return f"limit:{over[0][1]}" if over else None


class Fold:
    """Resolution and placement of a set of accepted events in canonical order."""

    def __init__(self, rules: Rules, forgotten: set[str]):
        self.rules, self.forgotten = rules, forgotten
        self.owner: dict[str, str] = {}
        self.held: dict[str, set[str]] = {}
        self.absorbed: dict[str, int] = {}
        self.created: dict[str, tuple[str, str]] = {}
        self.merged_into: dict[str, str] = {}
        self.home: dict[str, str] = {}
        self.notes: dict[str, list[list]] = {}
        self.merges: list[tuple] = []
        self.mentioned: set[str] = set()
        self.orphans: list[str] = []
        self.reached: Counter = Counter()

    def run(self, facts: Iterable[Fact]) -> Fold:
        """Place every event in canonical order (one left with no usable identifier is
        an orphan); returns self."""
        for fact in sorted(facts, key=lambda f: f.key):
            ids = usable(fact, self.rules, self.forgotten)
            if not ids:
                self.orphans.append(fact.message_id)
                continue
            self.mentioned.update(ids)
            self.place(fact, ids)
        return self

    def place(self, fact: Fact, active: list[str]) -> None:
        """Match ``fact``: drop its lowest-priority identifier while the match would break
        a rule (unless one is left), then merge every matched profile into the earliest
        created, give it the new identifiers and count the event there."""
        notes = []
        while True:
            owners = sorted({self.owner[i] for i in active if i in self.owner},
                            key=self.created.__getitem__)
            new = [i for i in active if i not in self.owner]
            if not new and len(owners) == 1:
                break  # all already held by one profile: nothing to check
            rule = broken_rule(set(new).union(*(self.held[p] for p in owners)), self.rules)
            if rule is None and len(owners) > 1 and (
                    sum(self.absorbed[p] for p in owners) + len(owners) - 1
                    > self.rules.merge_cap):
                rule = "merge_cap"
            if rule is None or len(active) == 1:
                break
            dropped = active.pop()
            notes.append([fact.time, fact.message_id, rule, dropped])
            self.reached[rule] += 1
        if owners:
            target = owners[0]
        else:
            target = profile_id(fact.message_id)
            self.held[target], self.absorbed[target] = set(), 0
            self.created[target] = fact.key
        for other in owners[1:]:
            self.merges.append((target, other, fact.message_id, "shared_identifier",
                                fact.time))
            self.merged_into[other] = target
            self.absorbed[target] += self.absorbed.pop(other) + 1
            for ident in self.held.pop(other):
                self.owner[ident] = target
                self.held[target].add(ident)
            self.reached["merge"] += 1
        for ident in new:
            self.owner[ident] = target
            self.held[target].add(ident)
        self.home[fact.message_id] = target
        self.notes[fact.message_id] = notes

    def final(self, pid: str) -> str:
        """The live profile ``pid`` ended in, following merges."""
        while pid in self.merged_into:
            pid = self.merged_into[pid]
        return pid


def expected_state(log: Iterable[dict | Forget], rules: object | None = None,
                   forget_key: bytes | None = None,
                   appended: Callable[[dict], datetime | None] | None = None) -> State:
    """The whole state ``log`` must leave (envelopes as sent, in log order, and forgets).

    Dead letters: what the contract's validation refuses, and a blank message id or
    person. Duplicates: a message id counts once, its first copy in the log (a forgotten
    event's id is free again). Skipped: no identifier left after the blocked values
    (``no_identifier``); an identifier of a forgotten person (``forgotten``). A forget
    removes the person's events, remembers their identifiers, and the events left with
    no usable identifier are skipped as ``forgotten``. ``forgotten`` holds the digests
    of the forgotten identifiers (``TYPE:VALUE``): HMAC-SHA256 under ``forget_key``, or
    plain SHA-256 without one. ``appended`` gives an envelope's Kafka record time (a
    record without ``receivedAt`` has its event time bounded around it, as the worker
    does); without it, no such bound. Pure.
    """
    rules = Rules.of(rules)
    state = State()
    kept: dict[str, Fact] = {}
    forgotten: set[str] = set()
    bodies: dict[str, object] = {}
    last_key = None
    for position, entry in enumerate(log):
        if isinstance(entry, Forget):
            forget(entry, kept, forgotten, state, rules)
            continue
        fact = read_record(entry, position, appended(entry) if appended else None)
        if isinstance(fact, str):
            state.dead.append((position, fact))
            state.reached["dead_letter"] += 1
            continue
        if fact.message_id in kept or fact.message_id in state.skipped:
            same = bodies.get(fact.message_id) == entry
            state.reached["duplicate_same" if same else "duplicate_different"] += 1
            continue
        bodies[fact.message_id] = entry
        if last_key is not None and fact.key < last_key:
            state.reached["out_of_order"] += 1
        last_key = max(last_key or fact.key, fact.key)
        ids = usable(fact, rules, set())
        if len(ids) < len(fact.identifiers):
            state.reached["blocked"] += 1
        if set(ids) & forgotten:
            state.skipped[fact.message_id] = "forgotten"
            state.reached["skipped_forgotten"] += 1
        elif not ids:
            state.skipped[fact.message_id] = "no_identifier"
            state.reached["no_identifier"] += 1
        else:
            kept[fact.message_id] = fact
            for ident in fact.identifiers:
                state.reached["type:" + ident.partition(":")[0]] += 1
    fill(state, kept, forgotten, rules, forget_key)
    return state


def forget(entry: Forget, kept: dict[str, Fact], forgotten: set[str], state: State,
           rules: Rules) -> None:
    """Forget the profile holding ``entry.identifier`` now, as ``docs/profiles.md`` says."""
    fold = Fold(rules, forgotten).run(kept.values())
    holder = fold.owner.get(entry.identifier)
    if holder is None:
        return
    forgotten |= fold.held[holder]
    state.reached["forget"] += 1
    for message_id, pid in fold.home.items():
        if fold.final(pid) == holder:
            del kept[message_id]
    for fact in list(kept.values()):
        if not usable(fact, rules, forgotten):
            del kept[fact.message_id]
            state.skipped[fact.message_id] = "forgotten"


def fill(state: State, kept: dict[str, Fact], forgotten: set[str], rules: Rules,
         forget_key: bytes | None = None) -> None:
    """The final fold of the kept events into ``state``."""
    fold = Fold(rules, forgotten).run(kept.values())
    state.reached.update(fold.reached)
    members: dict[str, list[Fact]] = {}
    for message_id, pid in fold.home.items():
        live = fold.final(pid)
        state.events[message_id] = live
        state.facts[message_id] = kept[message_id]
        members.setdefault(live, []).append(kept[message_id])
    for pid, facts in members.items():
        state.profiles[pid] = document(
            pid, facts, fold.held[pid], fold.absorbed[pid],
            [n for f in facts for n in fold.notes[f.message_id]])
        if len({f.item for f in facts if viewed(f)}) > RECENT_KEPT:
            state.reached["recent_trimmed"] += 1
        if fold.absorbed[pid] >= 2:
            state.reached["chain_3_or_more"] += 1
        if fold.absorbed[pid] >= rules.merge_cap:
            state.reached["merge_cap_reached"] += 1
    state.owners = {i: fold.owner.get(i) for i in fold.mentioned}
    state.merges = sorted(fold.merges)
    state.redirects = {old: fold.final(old) for old in fold.merged_into}
    state.allowed_redirects = {
        profile_id(m): live for m, live in state.events.items()
        if profile_id(m) not in state.profiles}
    state.forgotten = {
        hmac.new(forget_key, i.encode(), hashlib.sha256).digest() if forget_key
        else hashlib.sha256(i.encode()).digest() for i in forgotten}
