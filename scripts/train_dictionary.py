"""Train the profile store's Zstandard dictionary (``streams/profiles/codec.py``, version
2) from the demo's simulated traffic, never from the bench's events: profile documents
and stored events exactly as the store compresses them. Deterministic (fixed seeds, one
training thread): running it again writes the same bytes.

    .venv/bin/python scripts/train_dictionary.py streams/profiles/dictionary-2.zstd

The dictionary of a version is frozen once rows exist that use it; a new one is a new
version byte in the codec, and this script then writes a new file.
"""

from __future__ import annotations

import hashlib
import random
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import zstandard

from streams.identity.models import IdentityRules
from streams.ingest.simulate import make_people, next_events
from streams.profiles.decode import decode_envelope
from streams.profiles.logic import replay
from streams.profiles.models import FoldEvent

PEOPLE = 4000
ROUNDS = 12
SIZE = 16 * 1024
LEVEL = 3  # the codec's _ZSTD_LEVEL (not imported: the codec needs this file to load)


def samples() -> list[bytes]:
    """The demo's documents, as the store would compress them (orjson text)."""
    rng = random.Random(7)
    people = make_people(PEOPLE, rng, "train")
    start = datetime(2026, 6, 1, tzinfo=UTC)
    events: list[FoldEvent] = []
    for step in range(ROUNDS):
        now = start + timedelta(minutes=37 * step)
        for person in people:
            if rng.random() < 0.6:
                for sim in next_events(person, rng, now):
                    doc = {"messageId": f"train-{len(events)}", "source": sim.source,
                           **sim.event}
                    folded = decode_envelope(doc)
                    if isinstance(folded, FoldEvent):
                        events.append(folded)
    graph = replay(events, IdentityRules())
    profiles = [orjson.dumps({k: v for k, v in d.items() if k != "id"})
                for d in graph.profiles.values()]
    stored = []
    for event in events[:2 * len(profiles)]:
        doc = event.to_json()
        del doc["m"], doc["t"]
        stored.append(orjson.dumps(doc))
    out = profiles + stored
    random.Random(11).shuffle(out)
    return out


def main(path: Path) -> None:
    corpus = samples()
    trained = zstandard.train_dictionary(SIZE, corpus, level=LEVEL, threads=1,
                                         dict_id=2)
    data = trained.as_bytes()
    path.write_bytes(data)
    print(f"{path}: {len(data)} bytes from {len(corpus)} documents, "
          f"sha256 {hashlib.sha256(data).hexdigest()[:16]}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
