"""The oracle: a pure, single-threaded reference fold over an event log.

It decodes every record, drops the invalid ones, deduplicates by message id, sorts the
rest in the canonical order (event time, message id) and resolves and folds them one by
one into a single in-memory graph. The running pipeline must store exactly this, however
the events were partitioned, batched, interleaved, redelivered or split among workers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from streams.identity.models import IdentityRules
from streams.profiles.decode import decode_envelope, decode_record
from streams.profiles.logic import replay
from streams.profiles.models import FoldEvent, InvalidEvent


@dataclass(frozen=True)
class OracleResult:
    """Profiles by id, identifier -> profile id, merges, and skipped message ids."""

    profiles: dict[str, dict]
    owners: dict[str, str]
    merges: list[dict]
    skipped: dict[str, str]
    invalid: int


def oracle(records: Iterable[dict | bytes], rules: IdentityRules | None = None,
           forgotten: frozenset[str] = frozenset()) -> OracleResult:
    """Fold ``records`` (parsed envelopes or raw Kafka values) the reference way.

    Pure and single-threaded; memory grows with the log (it is a test and audit tool).
    """
    rules = rules or IdentityRules()
    events: list[FoldEvent] = []
    invalid = 0
    for record in records:
        decoded = decode_record(record) if isinstance(record, bytes) else decode_envelope(record)
        if isinstance(decoded, InvalidEvent):
            invalid += 1
        else:
            events.append(decoded)
    graph = replay(events, rules, forgotten)
    return OracleResult(
        profiles=graph.profiles,
        owners=dict(graph.owners),
        merges=sorted(graph.new_merges, key=lambda m: (m["event_time"], m["message_id"],
                                                       m["merged"])),
        skipped=dict(graph.skipped),
        invalid=invalid,
    )
