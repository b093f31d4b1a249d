"""One batch through a stage: decode every record, write the valid events in one
transaction under the retry policy, and isolate the events at fault.

This is what runs in a fold process (or in the worker's loop). It never raises for a
bad record or a data fault; it blocks while the database is unavailable.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from streams.errors import describe_failure
from streams.events.models import InvalidRecord
from streams.pipeline.policy import FailureClass, RetryPolicy, classify, describe
from streams.pipeline.stage import Raw, Stage

log = logging.getLogger(__name__)


@dataclass
class BatchResult:
    """What a batch did, for the worker to act on (detector, dead letters, acks)."""

    valid: int = 0
    invalid: list[InvalidRecord] = field(default_factory=list)  # failed decoding
    failed: list[InvalidRecord] = field(default_factory=list)  # valid, but not storable
    failed_classes: list[str] = field(default_factory=list)  # FailureClass value per failed
    outcome: Any = None  # the stage's summary of the last successful write
    write_seconds: float = 0.0
    retries: dict[str, int] = field(default_factory=dict)  # FailureClass value -> count

    def count_retry(self, cls: FailureClass) -> None:
        self.retries[cls.value] = self.retries.get(cls.value, 0) + 1


def _invalid(record: Raw, reason: str) -> InvalidRecord:
    topic, partition, offset, key, value = record[:5]
    return InvalidRecord(topic, partition, offset, key, value, reason, None)


async def _write(stage: Stage, policy: RetryPolicy, pairs: Sequence[tuple[Raw, Any]],
                 result: BatchResult) -> None:
    """Write ``pairs`` in one transaction; when that fails for good, split the batch in
    halves and write each (so a single event at fault costs about log2(n) extra
    transactions), down to the single event, which is then dead-lettered."""
    try:
        result.outcome = await policy.call(lambda: stage.write([e for _, e in pairs]),
                                           on_retry=result.count_retry)
        return
    except Exception as exc:  # noqa: BLE001 - classified; isolated below
        cls = classify(exc)
        if len(pairs) == 1:
            reason = "data fault" if cls is FailureClass.DATA else "processing failed"
            log.warning("event %s[%d]@%d not storable: %s", pairs[0][0][0], pairs[0][0][1],
                        pairs[0][0][2], describe(exc))
            result.failed.append(_invalid(pairs[0][0], f"{reason}: {describe(exc)}"))
            result.failed_classes.append(cls.value)
            return
        log.warning("batch of %d failed (%s: %s); isolating the events at fault", len(pairs),
                    cls.value, describe(exc))
    middle = len(pairs) // 2
    await _write(stage, policy, pairs[:middle], result)
    await _write(stage, policy, pairs[middle:], result)


async def process_batch(stage: Stage, records: Sequence[Raw],
                        policy: RetryPolicy) -> BatchResult:
    """Decode ``records`` with the stage, write the valid ones (one transaction, retried
    by ``policy``, split to isolate failures) and say what could not be stored. Never
    raises for bad data; blocks while the database is unavailable."""
    result = BatchResult()
    good: list[tuple[Raw, Any]] = []
    for record in records:
        try:
            item = stage.decode(record)
        except Exception as exc:  # noqa: BLE001 - a decoder bug must not stall the partition
            log.error("decoding %s[%d]@%d raised %s", record[0], record[1], record[2],
                      describe_failure(exc))
            item = _invalid(record, f"decoding failed: {type(exc).__name__}")
        if isinstance(item, InvalidRecord):
            result.invalid.append(item)
        else:
            good.append((record, item))
    result.valid = len(good)
    if good:
        started = time.perf_counter()
        await _write(stage, policy, good, result)
        result.write_seconds = time.perf_counter() - started
    return result
