"""The production code path folded in memory into the reference's ``State`` shape: the
profile stage's own decoding (``streams.profiles.stage.decode``: the contract's validation,
then ``decode_envelope``) and the worker's ``replay``. Unit tests and the mutants compare
it with ``streams.reference``; forgets need the store (integration tests)."""

from __future__ import annotations

import orjson

from streams.events.models import InvalidRecord
from streams.profiles.logic import replay
from streams.profiles.stage import decode
from streams.reference.facts import kind_of
from streams.reference.world import State


def decoded(log: list[dict]) -> tuple[list, list[tuple[int, str]]]:
    """(fold events in log order, dead letters as (position, reason)) by the stage's own
    decoding."""
    events, dead = [], []
    for position, doc in enumerate(log):
        got = decode((f"events.{kind_of(doc)}", 0, position, None, orjson.dumps(doc)))
        if isinstance(got, InvalidRecord):
            dead.append((position, got.reason))
        else:
            events.append(got)
    return events, dead


def production_state(log: list[dict], rules) -> State:
    """What the production fold makes of ``log`` (no forgets), as a ``State``."""
    events, dead = decoded(log)
    graph = replay(events, rules)
    state = State(dead=dead)
    state.profiles = graph.profiles
    state.owners = {i: graph.owners.get(i) for i in graph.mentioned}
    state.merges = sorted((m["survivor"], m["merged"], m["message_id"], m["rule"],
                           m["event_time"]) for m in graph.new_merges)
    state.events = {m: graph.final_profile_of(m) for m in graph.event_profile}
    state.skipped = dict(graph.skipped)
    state.redirects = {old: _follow(graph.redirects, old) for old in graph.redirects}
    return state


def _follow(redirects: dict[str, str], pid: str) -> str:
    while pid in redirects:
        pid = redirects[pid]
    return pid
