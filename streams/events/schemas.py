"""Loading the JSON Schemas in ``schemas/`` into jsonschema-rs validators (draft 2020-12).

The schema files are data of the product, read once per process; everything that
validates takes the resulting ``SchemaSet`` (or the process-wide default from
``default_schemas()``).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import jsonschema_rs
import orjson

VERSION = "v1"
# schemas/ sits at the repository top level, beside the streams package.
DEFAULT_DIR = Path(__file__).resolve().parents[2] / "schemas"

# Names of the schema files per use, without ".json".
ENVELOPE = "envelope"
DLQ = "events.dlq"
MESSAGE = "message"  # a value on messages.personalized (the trigger stage's output)
TOPIC_SCHEMAS = {"click": "events.click", "view": "events.view",
                 "social": "events.social", "identify": "events.identify"}


class SchemaLoadError(RuntimeError):
    """The schema folder is missing a file, or a file is not a valid schema."""


@dataclass(frozen=True)
class SchemaSet:
    """Compiled validators: the wire envelope, one per event topic kind, the dead letter,
    and a personalized message."""

    directory: Path
    envelope: jsonschema_rs.Validator
    topics: dict[str, jsonschema_rs.Validator]
    dlq: jsonschema_rs.Validator
    message: jsonschema_rs.Validator

    def by_name(self, name: str) -> jsonschema_rs.Validator:
        """The validator for a schema file name (``envelope``, ``events.click``, ...)."""
        if name == ENVELOPE:
            return self.envelope
        if name == DLQ:
            return self.dlq
        if name == MESSAGE:
            return self.message
        for kind, schema_name in TOPIC_SCHEMAS.items():
            if schema_name == name:
                return self.topics[kind]
        raise KeyError(name)


def schema_dir() -> Path:
    """Where the schemas are: ``STREAMS_SCHEMA_DIR``, else ``schemas/`` beside the package
    (a source checkout or editable install), else ``./schemas`` (an image that copied the
    repository's folder next to a regular install). Raises SchemaLoadError naming them."""
    candidates = [Path(p) for p in (os.environ.get("STREAMS_SCHEMA_DIR"),) if p]
    candidates += [DEFAULT_DIR, Path.cwd() / "schemas"]
    for candidate in candidates:
        if (candidate / VERSION).is_dir():
            return candidate
    raise SchemaLoadError("no schemas/" + VERSION + " folder in " +
                          ", ".join(str(c) for c in candidates) + " (set STREAMS_SCHEMA_DIR)")


def load_schemas(directory: Path | None = None) -> SchemaSet:
    """Read and compile every schema of the current version. Blocks on file reads.

    Raises SchemaLoadError naming the file when one is missing or invalid.
    """
    root = Path(directory or schema_dir()) / VERSION
    docs: dict[str, dict] = {}
    by_id: dict[str, dict] = {}
    for path in sorted(root.glob("*.json")):
        try:
            doc = orjson.loads(path.read_bytes())
        except orjson.JSONDecodeError as exc:
            raise SchemaLoadError(f"{path}: not JSON: {exc}") from exc
        if "$id" not in doc:
            raise SchemaLoadError(f"{path}: has no $id")
        docs[path.stem] = doc
        by_id[doc["$id"]] = doc
    needed = [ENVELOPE, DLQ, MESSAGE, *TOPIC_SCHEMAS.values()]
    missing = [n for n in needed if n not in docs]
    if missing:
        files = ", ".join(m + ".json" for m in missing)
        raise SchemaLoadError(f"{root}: missing schema file(s) {files}")
    registry = jsonschema_rs.Registry(list(by_id.items()))

    def compile_one(name: str) -> jsonschema_rs.Validator:
        try:
            return jsonschema_rs.validator_for(docs[name], registry=registry,
                                               validate_formats=True)
        except (jsonschema_rs.ValidationError, jsonschema_rs.ReferencingError,
                ValueError) as exc:
            raise SchemaLoadError(f"{root / (name + '.json')}: {exc}") from exc

    return SchemaSet(
        directory=root,
        envelope=compile_one(ENVELOPE),
        topics={kind: compile_one(name) for kind, name in TOPIC_SCHEMAS.items()},
        dlq=compile_one(DLQ),
        message=compile_one(MESSAGE),
    )


@functools.cache
def default_schemas() -> SchemaSet:
    """The process-wide schema set, loaded on first use."""
    return load_schemas()
