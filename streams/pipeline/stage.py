"""The contract between the runner and a stage plug-in."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from streams.events.models import InvalidRecord
from streams.settings import Settings

# A record as the runner hands it to a stage, and as it crosses to a fold process:
# (topic, partition, offset, key, value[, timestamp]): the timestamp is the record's
# Kafka time in epoch seconds (None or left out when unknown). Plain tuples pickle several
# times faster than dataclass instances.
Raw = tuple  # (str, int, int, bytes | None, bytes | None[, float | None])

E = TypeVar("E")


class Stage(Protocol[E]):
    """A stage plug-in. Built by its ``StageFactory`` in the process that runs it (a fold
    process, or the worker itself), once, and used for every batch there."""

    def decode(self, record: Raw) -> E | InvalidRecord:
        """The record as the stage's event, or an ``InvalidRecord`` saying why it cannot
        be one (it is then dead-lettered). Pure; must not raise for bad data."""

    async def write(self, events: Sequence[E]) -> Any:
        """Store ``events`` in ONE transaction, all or nothing, idempotently (a batch may
        be written again after a crash); returns a summary for the log. Raises on any
        failure: the runner classifies it (``policy.classify``), retries what is
        transient, and isolates events at fault by writing smaller batches."""

    async def close(self) -> None:
        """Release connections. Called once when the runner stops."""


# Module-level functions only: a fold process is spawned and receives the factory by
# reference (pickled by its qualified name).
StageFactory = Callable[[Settings], Stage]


@dataclass(frozen=True)
class StageSpec:
    """How a stage is run: the Faust agent's name (also its consumer name in logs and
    metrics), the topics it consumes, the factory building the stage, how many fold
    processes run it (0: in the worker's own event loop), and ``order_key``: records
    with equal keys (not None) are stored in the order they were taken, even when their
    batches are in flight together (for a stage whose result depends on which of two
    records comes first, as the profile stage's "the first copy of a message id wins").
    A module-level function of one record, run in the worker itself: keep it cheap."""

    name: str
    label: str
    topics: tuple[str, ...]
    factory: StageFactory
    processes: int
    order_key: Callable[[Raw], Hashable | None] | None = None
