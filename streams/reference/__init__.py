"""An independent reference of the profile stage, written from ``docs/profiles.md`` and the
event contract alone: the whole log, sorted once, plain loops.

It shares no code with ``streams.profiles`` or ``streams.identity`` (only the contract's
``streams.events``), so a bug in the worker's decoding, resolution, fold or merging makes
the two disagree instead of agreeing by construction. ``expected_state`` gives the whole
state a log must leave behind; ``stored_state`` reads it from PostgreSQL in the same shape;
``state_diff`` prints what differs.
"""

from streams.reference.compare import state_diff
from streams.reference.facts import Fact, read_record
from streams.reference.rules import Rules
from streams.reference.stored import stored_state
from streams.reference.world import Forget, State, expected_state

__all__ = ["Fact", "Forget", "Rules", "State", "expected_state", "read_record",
           "state_diff", "stored_state"]
