"""The README's message example and consumer: the same files the tests use, and valid."""

from __future__ import annotations

import importlib.util

import orjson

from streams.events.schemas import default_schemas
from tests.helpers import REPO

EXAMPLES = REPO / "docs" / "examples"
README = (REPO / "README.md").read_text()


def load_consumer():
    spec = importlib.util.spec_from_file_location("dedup_consumer",
                                                  EXAMPLES / "dedup_consumer.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_readme_shows_the_consumer_as_it_is_tested():
    assert "```python\n" + (EXAMPLES / "dedup_consumer.py").read_text() + "```\n" in README


def test_the_readme_message_is_the_example_file_and_valid_against_the_schema():
    text = (EXAMPLES / "message.json").read_text()
    assert "```json\n" + text + "```\n" in README
    message = orjson.loads(text)
    assert default_schemas().message.is_valid(message)
    assert message["channel"] == "email" and message["destination"]["type"] == "email"


def test_seen_ids_drop_repeats_and_forget_the_least_recent_beyond_their_size():
    seen = load_consumer().SeenIds(size=2)
    assert [seen.first_time(i) for i in ("a", "b", "a", "c", "a", "b")] == [
        True, True, False, True, False, True]
    assert seen.duplicates == 2
