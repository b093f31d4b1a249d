"""A corpus of hostile records, as data: each says what the collector answers and what
the worker does with it (dead-letter with a field and a rule, or store it verbatim).

Used by tests/integration/ingest/test_hostile_corpus.py, which sends every case both
through the collector and straight to Kafka. ``make(uid)`` builds the event for a
person ``uid`` (cases about the userId itself ignore it); ``raw`` replaces it with
bytes that are not a JSON event at all. A case with ``http`` other than 200 is refused
whole by the collector when posted alone; the others go in one batch, where a refused
one is listed by index and dead-lettered.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

TS = "2026-11-01T10:00:00Z"
SQL = "'); DROP TABLE profiles;--"
SCRIPT = "<script>alert('x')</script>"
IMG = '"><img src=x onerror=alert(1)>'
RTL = "\u202eexe.evil"
ZERO_WIDTH = "zero\u200bwidth\u200d"
EMOJI = "\U0001f600 \U0001f468\u200d\U0001f469\u200d\U0001f467 \U0001f1fa\U0001f1f8"
COMBINING = "Z\u0335\u0322a\u0336\u0301l\u0338g\u0335o\u0301"
HUGE_TEXT = "lorem ipsum " * 2000  # 24,000 characters: big, under the 32 KB event limit
# Pieces of the hostile people's data above: never in a reason, a log line or an error
# body (tests/leak_scan.py registers them for the session's scan).
PERSON_DATA = ("eeeeeeeeee", "uuuuuuuuuu", "INFO forged", "dddddddddd", "cccccccccc",
               "4915550", "\u202eexe.evil", "zero\u200bwidth")


def nested(levels: int, leaf: object = "x") -> object:
    """A value ``levels`` containers deep (alternating objects and arrays)."""
    value = leaf
    for i in range(levels):
        value = {"a": value} if i % 2 else [value]
    return value


def identify(uid: str, **fields) -> dict:
    return {"type": "identify", "userId": uid, "timestamp": TS, **fields}


def track(uid: str, **fields) -> dict:
    return {"type": "track", "event": "Clicked", "userId": uid, "timestamp": TS, **fields}


@dataclass(frozen=True)
class Case:
    """One hostile record and what must happen to it.

    ``field``/``rule``: the dead letter's field (JSON pointer) and a phrase of its reason
    (None: accepted and stored); ``direct_field``/``direct_rule`` when a direct record
    fails differently (not JSON, over the size limit); ``http``: the collector's status
    when the case is a request of its own; ``traits``: what the stored profile must hold,
    verbatim; ``user``: the userId the stored profile is found by (default ``uid``).
    """

    name: str
    make: Callable[[str], object] | None = None
    raw: bytes | None = None
    field: str | None = None
    rule: str = ""
    http: int = 200
    direct_field: str | None = None
    direct_rule: str | None = None
    traits: dict = dataclasses.field(default_factory=dict)
    user: str | None = None

    @property
    def refused(self) -> bool:
        return self.field is not None or self.http != 200


CASES: list[Case] = [
    # --- identifier values: length and control characters
    Case("email-3000", lambda u: identify(u, traits={"email": "e" * 3000 + "@example.test"}),
         field="/traits/email", rule="longer than 512 characters"),
    Case("userid-600", lambda u: identify("u" * 600), field="/userId",
         rule="longer than 512 characters"),
    Case("anonymousid-bell", lambda u: {**identify(u), "anonymousId": "a\x07b"},
         field="/anonymousId", rule="control character"),
    Case("userid-newline", lambda u: identify("user\nINFO forged log line"), field="/userId",
         rule="control character"),
    Case("device-id-1000", lambda u: track(u, context={"device": {"id": "d" * 1000}}),
         field="/context/device/id", rule="longer than 512 characters"),
    Case("external-id-ansi", lambda u: identify(u, context={"externalIds": [
        {"type": "instagram_id", "id": "\x1b[31mred"}]}),
         field="/context/externalIds/0/id", rule="control character"),
    Case("phone-c1", lambda u: identify(u, traits={"phone": "+4915550\x85"}),
         field="/traits/phone", rule="control character"),
    # Format characters (Unicode Cf) in identifiers: bidi controls and zero-width ones
    # make two ids look alike (free text keeps them: see the accepted cases below).
    Case("userid-rtl-override", lambda u: identify(u + RTL), field="/userId",
         rule="control character"),
    Case("userid-zero-width", lambda u: identify(u + ZERO_WIDTH), field="/userId",
         rule="control character"),
    Case("email-bidi-isolate", lambda u: identify(u, traits={
        "email": "\u2066ann@example.test\u2069"}), field="/traits/email",
         rule="control character"),
    Case("anonymousid-word-joiner", lambda u: {**identify(u), "anonymousId": "anon\u2060"},
         field="/anonymousId", rule="control character"),
    Case("phone-bom", lambda u: identify(u, traits={"phone": "\ufeff+4915550123"}),
         field="/traits/phone", rule="control character"),
    Case("external-id-zwj", lambda u: identify(u, context={"externalIds": [
        {"type": "twitter_handle", "id": "@ann\u200dx"}]}),
         field="/context/externalIds/0/id", rule="control character"),
    Case("context-email-700", lambda u: track(u, context={"traits": {
        "email": "c" * 700 + "@example.test"}}),
         field="/context/traits/email", rule="longer than 512 characters"),
    # --- structure: depth, width, NUL
    Case("deep-250", lambda u: identify(u, traits={"deep": nested(250)}),
         field="/traits/deep", rule="nested deeper than 32 levels"),
    Case("deep-33-levels", lambda u: track(u, properties={"v": nested(31)}),
         field="/properties/v", rule="nested deeper than 32 levels"),
    Case("deep-32-levels-ok", lambda u: identify(u, traits={"nest": nested(30, "ok")})),
    Case("wide-256", lambda u: track(u, properties={f"p{i}": i for i in range(256)}),
         field="/properties", rule="256 properties, over the limit of 255"),
    Case("wide-255-ok", lambda u: identify(u, traits={f"t{i}": i for i in range(255)})),
    Case("nul-in-trait", lambda u: identify(u, traits={"nickname": "a\x00b"}),
         field="/traits/nickname", rule="contains NUL"),
    Case("nul-in-key", lambda u: identify(u, traits={"bad\x00key": 1}),
         field="/traits", rule="property name contains NUL"),
    Case("nul-in-event-name", lambda u: track(u, event="Clicked\x00"),
         field="/event", rule="contains NUL"),
    Case("nul-in-context", lambda u: track(u, context={"page": {"title": "\x00"}}),
         field="/context/page/title", rule="contains NUL"),
    Case("nul-in-array", lambda u: track(u, properties={"tags": ["ok", "x\x00"]}),
         field="/properties/tags/1", rule="contains NUL"),
    # --- message ids
    Case("messageid-257", lambda u: track(u, messageId="m" * 257), field="/messageId",
         rule="longer than 256 characters"),
    # --- times
    Case("year-0000", lambda u: track(u, timestamp="0000-01-01T00:00:00Z"),
         field="/timestamp", rule="not a valid date-time"),
    Case("leap-second", lambda u: track(u, timestamp="2026-06-30T23:59:60Z"),
         field="/timestamp", rule="not a valid date-time"),
    Case("year-9999-offset", lambda u: track(u, timestamp="9999-12-31T23:59:59-01:00"),
         field="/timestamp", rule="not a valid date-time"),
    Case("year-2100", lambda u: track(u, timestamp="2100-01-01T00:00:00Z"),
         field="/timestamp", rule="out of range"),
    Case("year-1969", lambda u: track(u, timestamp="1969-12-31T23:59:59Z"),
         field="/timestamp", rule="out of range"),
    Case("timestamp-words", lambda u: track(u, timestamp="yesterday"),
         field="/timestamp", rule="not a valid date-time"),
    Case("sentat-leap", lambda u: track(u, sentAt="2026-12-31T23:59:60Z"),
         field="/sentAt", rule="not a valid date-time"),
    # --- shape
    Case("unknown-type", lambda u: {**track(u), "type": "<b>bogus</b>"}, field="/type",
         rule="unknown type"),
    Case("no-ids", lambda u: {"type": "track", "event": "x", "timestamp": TS},
         field="/userId", rule="at least one is required"),
    Case("traits-string", lambda u: identify(u, traits="all of them"), field="/traits",
         rule="object"),
    Case("empty-object", lambda u: {}, field="/type", rule="missing"),
    Case("array-not-object", lambda u: [1, 2, 3], field="", rule="must be a JSON object"),
    # --- requests the collector refuses whole; the same bytes written directly
    Case("invalid-utf8", raw=b'{"type": "track", "event": "\xff\xfe", "userId": "u", '
                             b'"timestamp": "2026-11-01T10:00:00Z"}',
         http=400, direct_field="", direct_rule="not JSON"),
    Case("lone-surrogate", raw=b'{"type": "identify", "userId": "u", "timestamp": '
                               b'"2026-11-01T10:00:00Z", "traits": {"name": "\\ud800"}}',
         http=400, direct_field="", direct_rule="not JSON"),
    Case("deep-2000", raw=b'{"type": "track", "event": "x", "userId": "u", "timestamp": '
                          b'"2026-11-01T10:00:00Z", "properties": {"a": ' + b"[" * 2000
                          + b"]" * 2000 + b"}}",
         http=400, direct_field="", direct_rule="not JSON"),
    Case("over-32kb", lambda u: identify(u, traits={"bio": "b" * 40_000}), http=413,
         direct_field="", direct_rule="max_event_bytes"),
    # Near the broker's own limit: its dead letter must still fit under it.
    Case("near-1mb", lambda u: identify(u, traits={"bio": "n" * 900_000}), http=413,
         direct_field="", direct_rule="max_event_bytes"),
    # --- accepted and stored verbatim: injection strings, odd Unicode, big values
    Case("sql-in-trait", lambda u: identify(u, traits={"nickname": SQL}),
         traits={"nickname": SQL}),
    Case("sql-in-userid", lambda u: identify(u + "' OR '1'='1", traits={"plan": SQL}),
         traits={"plan": SQL}, user="{uid}' OR '1'='1"),
    Case("script-in-trait", lambda u: identify(u, traits={"bio": SCRIPT, "site": IMG}),
         traits={"bio": SCRIPT, "site": IMG}),
    Case("script-event-name", lambda u: track(u, event=SCRIPT)),
    Case("rtl-override", lambda u: identify(u, traits={"name": RTL}), traits={"name": RTL}),
    Case("zero-width-name", lambda u: identify(u, traits={"name": ZERO_WIDTH}),
         traits={"name": ZERO_WIDTH}),
    Case("bidi-in-properties", lambda u: track(u, properties={"title": RTL + "\u2067x\u2069"})),
    Case("emoji", lambda u: identify(u, traits={"name": EMOJI}), traits={"name": EMOJI}),
    Case("combining-marks", lambda u: identify(u, traits={"name": COMBINING}),
         traits={"name": COMBINING}),
    Case("huge-text", lambda u: identify(u, traits={"bio": HUGE_TEXT}),
         traits={"bio": HUGE_TEXT}),
    Case("huge-numbers", lambda u: identify(u, traits={"big": 1e308, "neg": -1e308,
                                                      "int": 2**63 - 1}),
         traits={"big": 1e308, "neg": -1e308, "int": 2**63 - 1}),
    Case("far-future", lambda u: identify(u, timestamp="2090-01-01T00:00:00Z",
                                          traits={"plan": "future"}),
         traits={"plan": "future"}),
]
