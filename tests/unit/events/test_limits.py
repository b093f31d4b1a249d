"""The event contract's limits: each rule at its boundary, the event time bounded around
receipt, and the collector refusing exactly what the worker dead-letters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import limits
from streams.events.derive import message_id_for_record
from streams.events.dlq import dead_letter_for_record, dead_letter_for_rejection
from streams.events.limits import DEFAULT_LIMITS, Limits, bound_time, instant
from streams.events.models import InvalidRecord, Rejection, ValidEvent
from streams.events.schemas import default_schemas
from streams.events.validate import check_record, validate_record
from streams.identity.logic import IdentityRules
from streams.ingest import logic
from streams.ingest.models import RequestError, RoutedEvent
from streams.profiles.logic import profile_view, replay
from streams.profiles.stage import decode
from streams.settings import Settings

NOW = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
TS = "2026-11-01T09:59:00Z"
TOPICS = {"click": "events.click", "view": "events.view", "social": "events.social",
          "identify": "events.identify"}


def direct(**fields) -> dict:
    """A record as a direct producer writes it to events.identify."""
    return {"type": "identify", "userId": "u1", "messageId": "m1", "timestamp": TS, **fields}


def worker(doc: dict, topic: str = "events.identify") -> ValidEvent | InvalidRecord:
    return validate_record(topic, 0, 7, b"k", orjson.dumps(doc))


def collector(event: dict, path_type: str | None = None) -> RoutedEvent | Rejection:
    return logic.normalize_event(event, index=0, path_type=path_type, key_source="web",
                                 received_at=NOW)


def nested(levels: int, leaf: object = 1) -> object:
    """A value ``levels`` containers deep (alternating objects and arrays)."""
    value = leaf
    for i in range(levels):
        value = {"a": value} if i % 2 else [value]
    return value


# --- identifiers -------------------------------------------------------------------------

IDENTIFIER_PLACES = [
    ("/userId", lambda v: {"userId": v}),
    ("/anonymousId", lambda v: {"anonymousId": v}),
    ("/traits/email", lambda v: {"traits": {"email": v}}),
    ("/traits/phone", lambda v: {"traits": {"phone": v}}),
    ("/context/traits/email", lambda v: {"context": {"traits": {"email": v}}}),
    ("/context/device/id", lambda v: {"context": {"device": {"id": v}}}),
    ("/context/externalIds/1/id", lambda v: {"context": {"externalIds": [
        {"type": "instagram_id", "id": "ok"}, {"type": "instagram_id", "id": v}]}}),
]


@pytest.mark.parametrize("pointer,place", IDENTIFIER_PLACES, ids=[p for p, _ in IDENTIFIER_PLACES])
def test_identifier_values_over_the_limit_or_with_control_characters_are_refused(pointer, place):
    longest = "x" * 500 + "@example.test"[: 512 - 500]
    assert isinstance(worker(direct(**place(longest))), ValidEvent)
    too_long = "y" * 3000 + "@example.test"
    for bad, rule in ((too_long, "longer than 512 characters"),
                      ("bob\n@example.test", "control character"),
                      ("bob\x85@example.test", "control character"),
                      ("\u202ebob@example.test", "control character"),  # RTL override
                      ("bob\u200b@example.test", "control character")):  # zero-width space
        result = worker(direct(**place(bad)))
        assert isinstance(result, InvalidRecord), (pointer, bad[:20])
        assert result.field == pointer and rule in result.reason
        assert "bob" not in result.reason and "yyyy" not in result.reason  # never the value


def test_previous_id_counts_on_an_alias_only():
    alias = {"type": "alias", "userId": "u1", "previousId": "p\x07", "messageId": "m",
             "timestamp": TS}
    assert worker(alias).field == "/previousId"
    assert isinstance(worker(direct(previousId="p\x07")), ValidEvent)  # not an identifier


# Format characters (Unicode Cf) that make two identifiers look alike, or text run
# backwards: bidi embeddings/overrides/isolates, zero-width space/joiners, word joiner,
# byte order mark, soft hyphen, a tag character.
FORMAT_CHARACTERS = ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066",
                     "\u2067", "\u2068", "\u2069", "\u200b", "\u200c", "\u200d", "\u2060",
                     "\ufeff", "\u00ad", "\U000e0041"]


@pytest.mark.parametrize("ch", FORMAT_CHARACTERS,
                         ids=[f"U+{ord(c):04X}" for c in FORMAT_CHARACTERS])
def test_bidi_and_zero_width_characters_in_identifiers_are_refused_at_both_ends(ch):
    for pointer, place in IDENTIFIER_PLACES:
        doc = direct(**place(f"ann{ch}@example.test"))
        for result in (worker(doc), collector(doc)):
            assert isinstance(result, InvalidRecord | Rejection), (pointer, hex(ord(ch)))
            assert result.field == pointer and "control character" in result.reason
            assert "ann" not in result.reason


def test_format_characters_outside_identifiers_are_kept():
    family = "\U0001f468\u200d\U0001f469\u200d\U0001f467"  # emoji joined by ZWJ
    doc = direct(traits={"name": "\u202eevil " + family}, properties={"t": "a\u200bb"})
    assert isinstance(worker(doc), ValidEvent)
    assert isinstance(collector(doc), RoutedEvent)


def test_odd_but_printable_unicode_identifiers_are_accepted():
    for value in ("emoji\U0001f600", "e\u0301", "\u05e9\u05dc\u05d5\u05dd", "Zoë"):
        assert isinstance(worker(direct(userId=value)), ValidEvent), value


def test_message_id_limit_is_the_schemas():
    common = orjson.loads((Path(default_schemas().directory) / "common.json").read_bytes())
    assert common["$defs"]["messageId"]["maxLength"] == limits.MESSAGE_ID_MAX_CHARS
    assert isinstance(worker(direct(messageId="m" * 256)), ValidEvent)
    assert worker(direct(messageId="m" * 257)).field == "/messageId"
    assert isinstance(collector(direct(messageId="m" * 256)), RoutedEvent)
    assert collector(direct(messageId="m" * 257)).field == "/messageId"


# --- structure ---------------------------------------------------------------------------


def test_nul_is_refused_in_any_string_or_property_name_at_both_ends():
    cases = [
        (direct(traits={"nickname": "a\x00b"}), "/traits/nickname", "contains NUL"),
        (direct(properties={"list": [1, "x\x00"]}), "/properties/list/1", "contains NUL"),
        (direct(traits={"bad\x00key": 1}), "/traits", "property name contains NUL"),
        (direct(event="E\x00"), "/event", "contains NUL"),
    ]
    for doc, pointer, rule in cases:
        refused = worker(doc)
        assert isinstance(refused, InvalidRecord) and refused.field == pointer, refused
        assert rule in refused.reason
        rejected = collector(doc)
        assert isinstance(rejected, Rejection) and rejected.field == pointer


def test_depth_limit_counts_the_event_as_level_one():
    # The event (1) -> properties (2) -> 30 more containers = 32 levels: accepted.
    assert isinstance(worker(direct(properties={"v": nested(30)})), ValidEvent)
    refused = worker(direct(properties={"v": nested(31)}))
    assert isinstance(refused, InvalidRecord) and "nested deeper than 32 levels" in refused.reason
    assert refused.field.startswith("/properties/v")
    assert limits.structure_problem({"a": nested(3)}, Limits(max_depth=4)) is None
    assert limits.structure_problem({"a": nested(4)}, Limits(max_depth=4)) is not None


def test_properties_limit_is_per_object():
    wide = {f"k{i}": i for i in range(255)}
    assert isinstance(worker(direct(properties=wide)), ValidEvent)
    refused = worker(direct(properties={**wide, "one_more": 1}))
    assert refused.field == "/properties" and "256 properties" in refused.reason
    nested_wide = worker(direct(context={"x": {**wide, "more": 1}}))
    assert nested_wide.field == "/context/x"


@settings(max_examples=200, deadline=None)
@given(doc=st.recursive(
    st.none() | st.integers(-2**63, 2**63 - 1) | st.text(max_size=5)
    | st.sampled_from(["\x00", "a\x00"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.text(max_size=3) | st.just("\x00"), inner, max_size=4), max_leaves=40))
def test_the_fast_path_decides_as_the_walk_does(doc):
    small = Limits(max_depth=4, max_properties=3)
    walked = limits.structure_problem({"d": doc}, small)
    fast = limits.structure_problem({"d": doc}, small, orjson.dumps({"d": doc}))
    assert (walked is None) == (fast is None)


# --- times ----------------------------------------------------------------------------


@pytest.mark.parametrize("value,rule", [
    ("0000-01-01T00:00:00Z", "not a valid date-time"),
    ("2026-06-30T23:59:60Z", "not a valid date-time"),  # leap second
    ("9999-12-31T23:59:59-01:00", "not a valid date-time"),  # not in UTC's range
    ("2100-01-01T00:00:00Z", "out of range"),
    ("1969-12-31T23:59:59Z", "out of range"),
    ("tomorrow", "not a valid date-time"),
])
def test_times_that_are_not_real_instants_in_range_are_refused_at_both_ends(value, rule):
    for name in ("timestamp", "sentAt", "receivedAt", "originalTimestamp"):
        refused = worker(direct(**{name: value}))
        assert isinstance(refused, InvalidRecord), (name, value)
        assert refused.field == f"/{name}" and rule in refused.reason
    for name in ("timestamp", "sentAt"):
        rejected = collector(direct(**{name: value}))
        assert isinstance(rejected, Rejection) and rejected.field == f"/{name}", (name, value)
    # A client's receivedAt is replaced by the collector's: nothing to refuse.
    assert isinstance(collector(direct(receivedAt=value)), RoutedEvent)
    batch = logic.parse_request(orjson.dumps({"batch": [direct()], "sentAt": value}), None)
    assert isinstance(batch, RequestError) and batch.field == "sentAt"


def test_bound_time_holds_the_event_time_around_receipt_and_is_idempotent():
    window = Limits(max_future=timedelta(minutes=10), max_past=timedelta(days=30))
    far = datetime(2090, 1, 1, tzinfo=UTC)
    assert bound_time(far, NOW, window) == NOW + timedelta(minutes=10)
    assert bound_time(datetime(2000, 1, 1, tzinfo=UTC), NOW, window) == NOW - timedelta(days=30)
    inside = NOW - timedelta(hours=1)
    assert bound_time(inside, NOW, window) == inside
    assert bound_time(far, None, window) == far  # no receipt: as it is
    once = bound_time(far, NOW, window)
    assert bound_time(once, NOW, window) == once
    assert instant("2026-11-01T10:00:00+02:00") == NOW - timedelta(hours=2)


def test_the_collector_corrects_skew_bounds_and_keeps_the_raw_value():
    event = direct(timestamp="2090-01-01T00:00:00Z", sentAt="2026-11-01T09:00:00Z")
    routed = collector(event)
    doc = orjson.loads(routed.value)
    assert doc["originalTimestamp"] == "2090-01-01T00:00:00Z"  # the raw value, kept
    assert instant(doc["timestamp"]) == NOW + DEFAULT_LIMITS.max_future
    checked = validate_record("events.identify", 0, 0, b"u1", routed.value)
    assert checked.event_time == NOW + DEFAULT_LIMITS.max_future
    # Skew within the window: Segment's correction, receivedAt - (sentAt - timestamp).
    ok = orjson.loads(collector(direct(timestamp="2026-11-01T08:00:00Z",
                                       sentAt="2026-11-01T08:30:00Z")).value)
    assert instant(ok["timestamp"]) == NOW - timedelta(minutes=30)


def test_a_direct_record_is_bounded_around_its_own_received_at():
    far = direct(timestamp="2090-01-01T00:00:00Z", receivedAt="2026-11-01T10:00:00Z")
    assert worker(far).event_time == NOW + DEFAULT_LIMITS.max_future
    unbounded = worker(direct(timestamp="2090-01-01T00:00:00Z"))
    assert unbounded.event_time == datetime(2090, 1, 1, tzinfo=UTC)


def test_a_direct_record_without_received_at_is_bounded_around_its_kafka_timestamp():
    # Before: a direct producer's 2090 timestamp stood, and pinned traits and consent.
    doc = direct(timestamp="2090-01-01T00:00:00Z")
    raw = ("events.identify", 0, 7, b"k", orjson.dumps(doc), NOW.timestamp())
    folded = decode(raw)
    assert instant(folded.time) == NOW + DEFAULT_LIMITS.max_future
    # receivedAt, when the record has one, decides; the Kafka time is then unused.
    later = NOW + timedelta(days=3)
    doc = direct(timestamp="2090-01-01T00:00:00Z", receivedAt="2026-11-01T10:00:00Z")
    raw = ("events.identify", 0, 7, b"k", orjson.dumps(doc), later.timestamp())
    assert instant(decode(raw).time) == NOW + DEFAULT_LIMITS.max_future
    # A five-field record (no Kafka time known) is decoded as before.
    assert instant(decode(raw[:5]).time) == NOW + DEFAULT_LIMITS.max_future


@pytest.mark.parametrize("edge", ["past", "future"])
@pytest.mark.parametrize("off", [-2.0, -1.0, -0.001, 0.0, 0.001, 1.0, 2.0, 5.0])
def test_the_kafka_timestamp_bounds_at_and_near_each_edge_as_bound_time_does(edge, off):
    # check_record leaves out the datetime arithmetic for a time well inside the window
    # around a Kafka timestamp: near either edge the answer must still be bound_time's.
    window = Limits(max_future=timedelta(minutes=10), max_past=timedelta(days=30))
    at = NOW + timedelta(milliseconds=123)
    base = at - window.max_past if edge == "past" else at + window.max_future
    moment = base + timedelta(seconds=off)
    raw = ("events.identify", 0, 7, b"k",
           orjson.dumps(direct(timestamp=moment.isoformat())), at.timestamp())
    folded = decode(raw, limits=window)
    assert instant(folded.time) == bound_time(moment, at, window)


def test_check_record_hands_back_the_identifier_fields_it_checked():
    doc = direct(anonymousId="a1", traits={"email": "x@example.test"},
                 context={"device": {"id": "d1"},
                          "externalIds": [{"type": "instagram", "id": "i1"}]})
    found: list = []
    checked = check_record("events.identify", 0, 7, b"k", orjson.dumps(doc), found=found)
    assert not isinstance(checked, InvalidRecord)
    assert found == list(limits.identifier_fields(checked[0]))


def test_a_later_opt_out_wins_over_a_timestamp_far_in_the_future():
    # Before: the first identify's 2090 timestamp won every last-writer-wins comparison,
    # so the person's opt-out an hour later lost, for 64 years.
    pinned = {"type": "identify", "userId": "u-opt", "messageId": "in",
              "timestamp": "2090-01-01T00:00:00Z",
              "traits": {"email": "opt@example.test", "consent": {"email": True}}}
    opt_out = {"type": "identify", "userId": "u-opt", "messageId": "out",
               "timestamp": "2026-11-01T11:00:00Z",
               "traits": {"consent": {"email": False}}}
    records = []
    for event, received in ((pinned, NOW), (opt_out, NOW + timedelta(hours=1))):
        routed = logic.normalize_event(event, index=None, path_type="identify",
                                       key_source="web", received_at=received)
        records.append(("events.identify", 0, len(records), b"u-opt", routed.value))
    events = [decode(r) for r in records]
    graph = replay(events, IdentityRules())
    (profile,) = graph.profiles.values()
    assert profile_view(profile, NOW)["consent"] == {"email": False}


# --- the three failures of issue 14, and one set at both ends ------------------------------


def test_a_3000_character_email_is_refused_per_event_and_dead_lettered_without_the_email():
    email = "z" * 3000 + "@example.test"
    body = orjson.dumps({"batch": [direct(), direct(traits={"email": email}), direct()]})
    plan = logic.plan_events(logic.parse_request(body, None), path_type=None,
                             key_source="web", received_at=NOW)
    assert len(plan.accepted) == 2
    (rejection,) = plan.rejected
    assert (rejection.index, rejection.field) == (1, "/traits/email")
    assert "longer than 512 characters" in rejection.reason and "zzz" not in rejection.reason
    letter = dead_letter_for_rejection(rejection, topic="events.identify", key_source="web",
                                       now=NOW)
    assert "zzz" not in letter.header("x-reason")
    refused = worker(direct(traits={"email": email}))
    assert refused.field == "/traits/email" and "zzz" not in refused.reason
    stored = dead_letter_for_record(refused, NOW)
    assert "zzz" not in stored.header("x-reason")
    assert "zzz" not in orjson.loads(stored.value)["reason"]


@pytest.mark.parametrize("levels", [250, 300, 1000])
def test_a_deeply_nested_event_is_refused_and_its_dead_letter_is_built(levels):
    doc = direct(traits={"deep": nested(levels)})
    value = orjson.dumps(doc) if levels < 250 else _stdlib_json(doc)
    refused = validate_record("events.identify", 0, 9, b"u1", value)
    assert isinstance(refused, InvalidRecord)
    assert "nested deeper than" in refused.reason or "not JSON" in refused.reason
    letter = dead_letter_for_record(refused, NOW)
    assert default_schemas().dlq.is_valid(orjson.loads(letter.value))
    if levels < 1000:  # orjson reads up to 1024 levels; the collector's JSON too
        rejected = logic.plan_events(
            logic.parse_request(b'{"batch": [' + value + b"]}", None), path_type=None,
            key_source="web", received_at=NOW)
        (rejection,) = rejected.rejected
        assert rejection.index == 0 and "nested deeper than 32 levels" in rejection.reason
        letter = dead_letter_for_rejection(rejection, topic="events.identify",
                                           key_source="web", now=NOW)
        assert default_schemas().dlq.is_valid(orjson.loads(letter.value))


def _stdlib_json(doc: object) -> bytes:
    import json
    import sys

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10_000)
    try:
        return json.dumps(doc).encode()
    finally:
        sys.setrecursionlimit(limit)


def test_a_direct_record_without_message_id_gets_one_derived_from_its_bytes():
    value = orjson.dumps({k: v for k, v in direct().items() if k != "messageId"})
    first = validate_record("events.identify", 0, 1, b"u1", value)
    again = validate_record("events.identify", 3, 9, b"u1", value)
    assert first.message_id == again.message_id == message_id_for_record(value)
    other = validate_record("events.identify", 0, 2, b"u1", value + b" ")
    assert other.message_id != first.message_id  # different bytes, a different record
    assert validate_record("events.identify", 0, 1, b"u1", orjson.dumps(
        direct(messageId=None))).message_id  # null counts as missing


def test_limits_come_from_the_settings():
    got = Limits.from_settings(Settings(event_max_depth=8, event_max_properties=20,
                                        event_max_identifier_chars=64,
                                        event_max_future_seconds=60, event_max_past_days=2))
    assert (got.max_depth, got.max_properties, got.max_identifier_chars) == (8, 20, 64)
    assert (got.max_future, got.max_past) == (timedelta(seconds=60), timedelta(days=2))
    assert worker(direct(userId="u" * 100)).__class__ is ValidEvent
    tight = validate_record("events.identify", 0, 0, b"k", orjson.dumps(direct(userId="u" * 100)),
                            limits=got)
    assert isinstance(tight, InvalidRecord) and "longer than 64" in tight.reason


# One set at both ends: what the collector refuses for a contract rule, the worker
# dead-letters when a direct producer writes the same event (and the reverse).
hostile_text = st.sampled_from(["ok", "a\x00b", "tab\there", "x" * 600, "\u202e", "e\u0301",
                                "'); DROP TABLE profiles;--", "<script>alert(1)</script>"])
hostile_time = st.sampled_from([TS, "0000-01-01T00:00:00Z", "2026-06-30T23:59:60Z",
                                "2090-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
                                "1969-01-01T00:00:00Z"])


@settings(max_examples=300, deadline=None)
@given(user_id=hostile_text, email=hostile_text, trait=hostile_text, key=hostile_text,
       depth=st.integers(0, 40), width=st.sampled_from([1, 255, 256]), timestamp=hostile_time,
       message_id=st.sampled_from(["m", "m" * 256, "m" * 257]))
def test_the_collector_refuses_exactly_what_the_worker_dead_letters(
        user_id, email, trait, key, depth, width, timestamp, message_id):
    event = {"type": "identify", "userId": user_id, "messageId": message_id,
             "timestamp": timestamp,
             "traits": {"email": email, key: trait, "deep": nested(depth),
                        "wide": {f"k{i}": i for i in range(width)}}}
    at_collector = collector(event)
    at_worker = worker(event)
    assert isinstance(at_collector, RoutedEvent) == isinstance(at_worker, ValidEvent), (
        at_collector, getattr(at_worker, "reason", None))
    if isinstance(at_collector, RoutedEvent):
        again = validate_record(TOPICS[at_collector.kind], 0, 0, b"k", at_collector.value)
        assert isinstance(again, ValidEvent)
    else:
        assert at_collector.field == at_worker.field


def test_a_direct_record_over_the_event_size_limit_is_dead_lettered():
    big = orjson.dumps(direct(traits={"bio": "b" * 40_000}))
    refused = validate_record("events.identify", 0, 0, b"u1", big)
    assert isinstance(refused, InvalidRecord) and "max_event_bytes" in refused.reason
    # The collector answers 413 for the same event (nothing of the request is written).
    assert logic.parse_request(big, "identify").status == 413


def test_the_dead_letter_of_a_record_near_the_brokers_limit_stays_small():
    value = orjson.dumps(direct(traits={"bio": "b" * 900_000}))
    refused = validate_record("events.identify", 0, 0, b"u1", value)
    letter = dead_letter_for_record(refused, NOW)
    doc = orjson.loads(letter.value)
    assert len(letter.value) < 100_000 and doc["rawTruncatedFrom"] == len(value)
    assert default_schemas().dlq.is_valid(doc) and doc["raw"].startswith('{"type":"identify"')


@settings(max_examples=300, deadline=None)
@given(body=st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=8) | st.sampled_from(["identify", "track", TS, "2026-06-30T23:59:60Z"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["type", "userId", "anonymousId", "timestamp", "sentAt", "traits",
                         "context", "properties", "messageId", "event", "batch", "x\x00"]),
        inner, max_size=6), max_leaves=30),
    path_type=st.sampled_from([None, "identify", "track"]))
def test_the_collector_never_fails_a_request_for_its_content(body, path_type):
    if path_type is None and isinstance(body, dict) and isinstance(body.get("batch"), dict):
        body["batch"] = [body["batch"]]
    parsed = logic.parse_request(orjson.dumps(body), path_type)
    if isinstance(parsed, RequestError):
        assert parsed.status in (400, 413)
        return
    plan = logic.plan_events(parsed, path_type=path_type, key_source="web", received_at=NOW)
    if isinstance(plan, RequestError):
        assert plan.status in (400, 413)
        return
    for routed in plan.accepted:
        assert isinstance(validate_record(TOPICS[routed.kind], 0, 0, b"k", routed.value),
                          ValidEvent)
    for rejection in plan.rejected:
        dead_letter_for_rejection(rejection, topic=None, key_source="web", now=NOW)
