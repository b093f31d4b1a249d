"""The profile stage as a plug-in of the stage runner: a record is decoded by the event
contract's validation and reduced to a ``FoldEvent``; a batch is resolved and folded into
profiles in one PostgreSQL transaction by ``ProfileStore.write_batch``."""

from __future__ import annotations

from collections.abc import Sequence

from streams.events.derive import claimed_message_id
from streams.events.models import InvalidRecord
from streams.events.topics import TopicKinds
from streams.events.validate import Limits, check_record
from streams.pipeline.stage import Raw
from streams.profiles.decode import decode_envelope
from streams.profiles.models import FoldEvent, InvalidEvent
from streams.profiles.store import BatchOutcome, ProfileStore
from streams.settings import Settings


def decode(record: Raw, kinds: TopicKinds | None = None,
           limits: Limits | None = None) -> FoldEvent | InvalidRecord:
    """The one place a consumed record becomes a profile event: the event contract's
    validation for its topic (schema and limits), then reduction to what the fold
    needs; or why it cannot be one. A record without ``receivedAt`` (a direct producer's)
    has its time bounded around its Kafka timestamp instead, which the broker holds
    within ``log.message.timestamp.after.max.ms`` (one hour in Kafka 4) of its clock."""
    topic, partition, offset, key, value = record[:5]
    fields: list = []  # the identifier fields, listed once for both steps
    checked = check_record(topic, partition, offset, key, value, kinds=kinds, limits=limits,
                           appended_at=(record[5] or None) if len(record) > 5 else None,
                           found=fields)
    if type(checked) is InvalidRecord:
        return checked
    folded = decode_envelope(checked[0], checked[1], fields)  # type: ignore[index]
    if type(folded) is InvalidEvent:
        return InvalidRecord(topic, partition, offset, key, value, folded.reason, None)
    return folded


class ProfileStage:
    """Validate, resolve and fold events into profiles (see ``streams.pipeline.stage``)."""

    def __init__(self, settings: Settings):
        from streams.db import async_engine

        self.kinds = TopicKinds.for_settings(settings)
        self.limits = Limits.from_settings(settings)
        self.store = ProfileStore.for_settings(settings, async_engine(settings))

    def decode(self, record: Raw) -> FoldEvent | InvalidRecord:
        return decode(record, self.kinds, self.limits)

    async def write(self, events: Sequence[FoldEvent]) -> BatchOutcome:
        return await self.store.write_batch(list(events))

    async def close(self) -> None:
        await self.store.engine.dispose()


def copies_key(record: Raw) -> str | None:
    """The runner's ``order_key`` of the profile stage: the message id a record claims.
    Of two copies of one message id only the first stored counts, and the first in the
    log must be that one (``docs/profiles.md``), so batches holding copies of one id are
    stored in the order they were taken. Pure; parses the record's JSON."""
    return claimed_message_id(record[4])


def make_profile_stage(settings: Settings) -> ProfileStage:
    """The stage factory (module-level, so a fold process can be handed it)."""
    return ProfileStage(settings)
