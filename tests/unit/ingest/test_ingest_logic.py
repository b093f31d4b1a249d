"""Pure ingestion logic: routing, normalization, bad input, rate limits, dead letters, the
systemic-failure stop and replay planning. No services."""

from __future__ import annotations

import base64
import random
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from streams.events import derive, dlq, topics, validate
from streams.events.models import InvalidRecord, Rejection, ValidEvent
from streams.events.schemas import default_schemas
from streams.ingest import logic
from streams.ingest import replay as replays
from streams.ingest.models import RequestError, RoutedEvent
from streams.ingest.simulate import broken_event, make_people, next_events
from streams.pipeline import systemic

NOW = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
KEYS = {"wk_web": "web", "wk_app": "mobile", "wk_watch": "smartwatch", "wk_ig": "instagram"}


def make_event(**overrides) -> dict:
    """A valid wire track event from the web, with overrides (None removes a field)."""
    event = {"type": "track", "event": "Product Clicked", "anonymousId": "anon-1",
             "messageId": "m-1", "timestamp": "2026-11-01T09:59:58.000Z",
             "properties": {"product_id": "sku-1"}}
    for key, value in overrides.items():
        if value is None:
            event.pop(key, None)
        else:
            event[key] = value
    return event


def normalize(raw, key_source="web", **kw) -> RoutedEvent | Rejection:
    return logic.normalize_event(
        raw, index=kw.pop("index", None), path_type=kw.pop("path_type", None),
        key_source=key_source, received_at=kw.pop("received_at", NOW), **kw)


def routed(raw, key_source="web", **kw) -> tuple[RoutedEvent, dict]:
    result = normalize(raw, key_source, **kw)
    assert isinstance(result, RoutedEvent), result
    return result, orjson.loads(result.value)


# --- routing -------------------------------------------------------------------------


@pytest.mark.parametrize("event_type,extra,kind", [
    ("page", {"name": "Home"}, "view"),
    ("screen", {"name": "Cart"}, "view"),
    ("track", {"event": "Product Clicked"}, "click"),
    ("identify", {"traits": {"email": "a@example.test"}}, "identify"),
    ("alias", {"previousId": "anon-1", "userId": "user-1"}, "identify"),
])
def test_routing_by_type(event_type, extra, kind):
    raw = make_event(**{"type": event_type, "event": None, "properties": None, **extra})
    result, _ = routed(raw)
    assert result.kind == kind


def test_track_from_social_write_key_goes_to_social_with_channel():
    result, doc = routed(make_event(event="Post Liked"), key_source="instagram")
    assert result.kind == "social"
    assert (doc["source"], doc["socialChannel"], doc["socialAction"]) == \
        ("social", "instagram", "like")


@pytest.mark.parametrize("field,value,channel", [
    ("channel", "facebook", "facebook"), ("channel", "X", "twitter"),
    ("network", "LinkedIn", "linkedin"), ("socialChannel", "ig", "instagram"),
])
def test_track_naming_a_social_channel_in_properties_goes_to_social(field, value, channel):
    result, doc = routed(make_event(event="Post Shared", properties={field: value}))
    assert result.kind == "social"
    assert doc["socialChannel"] == channel and doc["source"] == "web"
    assert doc["socialAction"] == "share"


def test_track_with_a_non_social_channel_value_stays_a_click():
    result, doc = routed(make_event(properties={"channel": "email"}))
    assert result.kind == "click" and "socialChannel" not in doc


def test_page_from_social_key_is_still_a_view():
    result, doc = routed(make_event(type="page", event=None, name="Profile"),
                         key_source="facebook")
    assert result.kind == "view" and doc["source"] == "social" and "socialChannel" not in doc


@pytest.mark.parametrize("ids,key", [
    ({"userId": "user-1", "anonymousId": "anon-1"}, "user-1"),
    ({"anonymousId": "anon-1"}, "anon-1"),
    ({"userId": "user-1", "anonymousId": None}, "user-1"),
])
def test_key_is_user_id_else_anonymous_id(ids, key):
    result, _ = routed(make_event(**{"anonymousId": None, **ids}))
    assert result.key == key


# --- normalization -----------------------------------------------------------------------


def test_clock_skew_corrected_from_sent_at_and_received_at():
    # The device clock is 2 minutes fast: it says sentAt 10:02:00 when we receive at 10:00:00.
    raw = make_event(timestamp="2026-11-01T10:01:50.000Z", sentAt="2026-11-01T10:02:00.000Z")
    _, doc = routed(raw)
    assert doc["timestamp"] == "2026-11-01T09:59:50Z"
    assert doc["originalTimestamp"] == "2026-11-01T10:01:50.000Z"
    assert doc["receivedAt"] == "2026-11-01T10:00:00.000Z"


def test_batch_sent_at_applies_when_the_event_has_none():
    raw = make_event(timestamp="2026-11-01T09:00:00.000Z")
    _, doc = routed(raw, sent_at="2026-11-01T09:00:10.000Z")
    assert doc["timestamp"] == "2026-11-01T09:59:50Z"
    assert doc["sentAt"] == "2026-11-01T09:00:10.000Z"


def test_without_sent_at_the_timestamp_is_kept_and_without_timestamp_it_is_received_at():
    _, kept = routed(make_event(timestamp="2026-11-01T08:00:00.25+01:00"))
    assert kept["timestamp"] == "2026-11-01T07:00:00.250000Z"
    _, filled = routed(make_event(timestamp=None))
    assert filled["timestamp"] == "2026-11-01T10:00:00.000Z" and "originalTimestamp" not in filled


def test_missing_message_id_is_generated_stably_across_retries():
    raw = make_event(messageId=None)
    first, doc = routed(raw)
    again, _ = routed(dict(raw), received_at=NOW + timedelta(seconds=30))
    other, _ = routed(make_event(messageId=None, event="Other"))
    assert doc["messageId"] and first.message_id == again.message_id != other.message_id


def test_write_key_source_wins_over_the_event_claim():
    _, doc = routed(make_event(source="smartwatch"), key_source="mobile")
    assert doc["source"] == "mobile"


@pytest.mark.parametrize("context,event_type,source", [
    ({"device": {"type": "watch"}}, "screen", "smartwatch"),
    ({"os": {"name": "watchOS"}}, "track", "smartwatch"),
    ({"app": {"name": "Shop"}}, "track", "mobile"),
    ({"os": {"name": "Android"}}, "track", "mobile"),
    ({}, "screen", "mobile"),
    ({"page": {"path": "/"}}, "page", "web"),
    ({}, "track", "web"),
])
def test_source_derived_from_envelope_without_write_key(context, event_type, source):
    event = {"type": event_type, "context": context}
    assert derive.derive_source(event, None) == source


def test_batch_context_merged_under_event_context():
    _, doc = routed(make_event(context={"locale": "de-DE"}),
                    batch_context={"locale": "en-US", "ip": "203.0.113.1"})
    assert doc["context"] == {"locale": "de-DE", "ip": "203.0.113.1"}


def test_normalized_events_pass_their_topic_schema():
    """The collector's output is what the processing side accepts (property over the
    simulator's realistic traffic, every source)."""
    schemas = default_schemas()
    rng = random.Random(7)
    people = make_people(30, rng, "t")
    seen_kinds = set()
    for step in range(600):
        for sim in next_events(rng.choice(people), rng, NOW + timedelta(seconds=step)):
            result = normalize(sim.event, key_source=sim.source)
            assert isinstance(result, RoutedEvent), (sim, result)
            doc = orjson.loads(result.value)
            errors = [e.message for e in schemas.topics[result.kind].iter_errors(doc)]
            assert errors == [], (sim, errors)
            seen_kinds.add(result.kind)
    assert seen_kinds == {"click", "view", "social", "identify"}


def test_simulated_broken_events_are_rejected():
    rng = random.Random(3)
    for _ in range(20):
        sim = broken_event(rng, NOW)
        assert isinstance(normalize(sim.event), Rejection)


# --- bad input ------------------------------------------------------------------------


def test_missing_ids_rejected_naming_the_fields():
    rejection = normalize(make_event(anonymousId=None))
    assert isinstance(rejection, Rejection)
    assert rejection.field == "/userId" and "userId" in rejection.reason \
        and "anonymousId" in rejection.reason


def test_unknown_type_rejected_naming_type():
    rejection = normalize(make_event(type="merge"))
    assert isinstance(rejection, Rejection)
    assert rejection.field == "/type" and "merge" in rejection.reason


@pytest.mark.parametrize("override,field", [
    ({"event": None}, "/event"),
    ({"timestamp": "yesterday"}, "/timestamp"),
    ({"properties": [1]}, "/properties"),
    ({"context": {"externalIds": [{"id": "x"}]}}, "/context/externalIds/0/type"),
])
def test_schema_violation_names_the_json_pointer(override, field):
    rejection = normalize(make_event(**override))
    assert isinstance(rejection, Rejection)
    assert rejection.field == field and rejection.reason.startswith(field)


def test_alias_needs_previous_id():
    rejection = normalize({"type": "alias", "userId": "u"})
    assert isinstance(rejection, Rejection) and rejection.field == "/previousId"
    assert rejection.reason == "/previousId: is required"


def test_endpoint_type_overrides_body_type():
    result, doc = routed(make_event(type="page"), path_type="track")
    assert result.kind == "click" and doc["type"] == "track"


@pytest.mark.parametrize("body,path_type,status,field", [
    (b"{nope", "track", 400, "body"),
    (b"", None, 400, "body"),
    (b"[1,2]", "track", 400, "body"),
    (b'{"batch": {}}', None, 400, "batch"),
    (b'{"events": []}', None, 400, "batch"),
    (b'{"batch": []}', None, 400, "batch"),
    (b'{"batch": [{"type": "page", "userId": "u"}], "sentAt": "soon"}', None, 400, "sentAt"),
])
def test_parse_request_bad_shapes(body, path_type, status, field):
    error = logic.parse_request(body, path_type)
    assert isinstance(error, RequestError)
    assert (error.status, error.field) == (status, field)
    assert error.body()["field"] == field and error.body()["message"]


def test_event_over_32kb_is_413_naming_the_limit():
    big = make_event(properties={"blob": "x" * (33 * 1024)})
    single = logic.parse_request(orjson.dumps(big), "track")
    assert isinstance(single, RequestError) and single.status == 413
    assert single.field == "max_event_bytes"
    parsed = logic.parse_request(orjson.dumps({"batch": [make_event(), big]}), None)
    batch = logic.plan_events(parsed, path_type=None, key_source="web", received_at=NOW)
    assert isinstance(batch, RequestError) and batch.status == 413 and batch.field == "/batch/1"
    assert "max_event_bytes" in batch.message
    # An invalid event over the limit too: the request is refused, not dead-lettered.
    parsed = logic.parse_request(orjson.dumps({"batch": [{**big, "type": "nope"}]}), None)
    batch = logic.plan_events(parsed, path_type=None, key_source="web", received_at=NOW)
    assert isinstance(batch, RequestError) and batch.field == "/batch/0"


def test_request_over_500kb_is_413():
    events = [make_event(properties={"blob": "x" * 20_000}) for _ in range(30)]
    error = logic.parse_request(orjson.dumps({"batch": events}), None)
    assert isinstance(error, RequestError) and error.status == 413
    assert error.field == "max_request_bytes"


def test_single_invalid_event_is_a_400_and_batch_keeps_valid_ones():
    parsed = logic.parse_request(orjson.dumps(make_event(anonymousId=None)), "track")
    plan = logic.plan_events(parsed, path_type="track", key_source="web", received_at=NOW)
    assert isinstance(plan, RequestError) and plan.status == 400 and plan.field == "/userId"

    body = orjson.dumps({"batch": [make_event(), make_event(type="merge"),
                                   make_event(anonymousId=None), "not an object",
                                   make_event(type="page", event=None)],
                         "sentAt": "2026-11-01T10:00:00Z", "context": {"ip": "203.0.113.9"}})
    parsed = logic.parse_request(body, None)
    plan = logic.plan_events(parsed, path_type=None, key_source="web", received_at=NOW)
    assert [e.kind for e in plan.accepted] == ["click", "view"]
    assert [(r.index, r.field) for r in plan.rejected] == [(1, "/type"), (2, "/userId"), (3, "")]
    # What the batch said about a rejected event stays with it, for the dead letter.
    assert plan.rejected[1].event["sentAt"] == "2026-11-01T10:00:00Z"
    assert plan.rejected[1].event["context"] == {"ip": "203.0.113.9"}
    assert plan.rejected[1].kind == "click"


# --- authentication and rate limits -------------------------------------------------------


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def test_authenticate_binds_key_to_source():
    caller = logic.authenticate(basic("wk_watch"), KEYS)
    assert (caller.write_key, caller.source) == ("wk_watch", "smartwatch")
    assert "wk_watch" not in repr(caller)


@pytest.mark.parametrize("header", [None, "", "Bearer abc", "Basic ???", basic("wk_nope")])
def test_authenticate_refuses_with_401_without_echoing_the_key(header):
    error = logic.authenticate(header, KEYS)
    assert isinstance(error, RequestError) and error.status == 401
    assert error.field == "Authorization" and "wk_nope" not in error.message


def test_token_bucket_allows_burst_then_asks_to_wait_then_refills():
    limiter = logic.RateLimiter(rate=10, burst=20)
    assert limiter.take("web", 15, now=0.0) == 0.0
    assert limiter.take("web", 5, now=0.0) == 0.0
    wait = limiter.take("web", 1, now=0.0)
    assert wait == pytest.approx(0.1)
    assert limiter.take("mobile", 1, now=0.0) == 0.0  # per key
    assert limiter.take("web", 1, now=0.2) == 0.0  # refilled 2 tokens
    error = logic.rate_limited("web", wait, 10)
    assert error.status == 429 and error.retry_after == 1 and error.field == "rate"


def test_batch_larger_than_burst_is_served_once_then_waits():
    limiter = logic.RateLimiter(rate=100, burst=50)
    assert limiter.take("web", 500, now=0.0) == 0.0
    assert limiter.take("web", 1, now=1.0) == pytest.approx(3.51)


def test_rate_zero_disables_limiting():
    assert logic.RateLimiter(rate=0, burst=1).take("web", 10**6, now=0.0) == 0.0


# --- processing side ------------------------------------------------------------------------


def normalized(**overrides) -> bytes:
    _, doc = routed(make_event(**overrides))
    return orjson.dumps(doc)


def test_validate_record_accepts_a_valid_event_and_fills_source():
    value = orjson.dumps({"type": "page", "anonymousId": "a", "messageId": "m",
                          "timestamp": "2026-11-01T10:00:00Z", "context": {"app": {}}})
    result = validate.validate_record("p.events.view", 2, 17, b"a", value)
    assert isinstance(result, ValidEvent)
    assert (result.kind, result.message_id, result.key, result.offset) == ("view", "m", "a", 17)
    assert result.payload["source"] == "mobile"
    assert result.event_time == NOW


@pytest.mark.parametrize("topic,value,field,text", [
    ("events.click", b"", "", "empty"),
    ("events.click", b"{oops", "", "not JSON"),
    ("events.click", b"[1]", "", "JSON object"),
    ("events.click", orjson.dumps({"type": "page", "userId": "u", "messageId": "m",
                                   "timestamp": "2026-11-01T10:00:00Z"}), "/type", "view"),
    ("events.social", None, "/socialChannel", "socialChannel"),
    ("events.click", orjson.dumps({"type": "track", "event": "x", "userId": "u",
                                   "messageId": "m" * 257, "timestamp": "2026-11-01T10:00:00Z"}),
     "/messageId", "longer than 256"),
    ("events.click", orjson.dumps({"type": "track", "event": "x", "messageId": "m",
                                   "timestamp": "2026-11-01T10:00:00Z"}), "/userId", "anonymousId"),
])
def test_validate_record_rejects_naming_the_reason(topic, value, field, text):
    if value is None:
        value = normalized()  # a valid click, but on the social topic without a channel
    result = validate.validate_record(topic, 1, 5, b"k", value)
    assert isinstance(result, InvalidRecord)
    assert result.field == field and text in result.reason
    assert (result.topic, result.partition, result.offset, result.value) == (topic, 1, 5, value)


def test_validate_record_with_configured_topic_names():
    kinds = topics.TopicKinds.from_names("c", "v", "s", "i")
    checked = validate.validate_record("c", 0, 0, None, normalized(), kinds=kinds)
    assert isinstance(checked, ValidEvent)
    unknown = validate.validate_record("events.click", 0, 0, None, normalized(), kinds=kinds)
    assert isinstance(unknown, InvalidRecord) and "not an event topic" in unknown.reason


def test_dead_letter_for_record_headers_and_schema():
    invalid = InvalidRecord("events.click", 3, 1207, b"anon-1", b"{oops", "value is not JSON: x",
                            "")
    letter = dlq.dead_letter_for_record(invalid, NOW)
    assert letter.key == b"anon-1"
    assert letter.header("x-original-topic") == "events.click"
    assert letter.header("x-original-partition") == "3"
    assert letter.header("x-original-offset") == "1207"
    assert letter.header("x-reason") == "value is not JSON: x"
    assert letter.header("x-origin") == "processing"
    doc = orjson.loads(letter.value)
    assert default_schemas().dlq.is_valid(doc)
    assert doc["raw"] == "{oops" and doc["original"]["offset"] == 1207

    binary = InvalidRecord("events.click", 0, 1, None, b"\xff\xfe", "value is not JSON")
    doc = orjson.loads(dlq.dead_letter_for_record(binary, NOW).value)
    assert doc["rawEncoding"] == "base64" and default_schemas().dlq.is_valid(doc)


def test_dead_letter_for_rejection_and_read_back():
    rejection = normalize(make_event(timestamp="nope"), index=4)
    letter = dlq.dead_letter_for_rejection(rejection, topic="p.events.click", key_source="web",
                                             now=NOW)
    doc = orjson.loads(letter.value)
    assert default_schemas().dlq.is_valid(doc)
    assert doc["batchIndex"] == 4 and doc["origin"] == "collector"
    assert letter.header("x-original-partition") == "-1"
    stored = dlq.read_dead_letter(0, 9, letter.key, letter.value, letter.headers)
    assert (stored.origin, stored.field, stored.original_topic) == \
        ("collector", "/timestamp", "p.events.click")
    assert stored.event["timestamp"] == "nope"


def test_read_dead_letter_written_by_someone_else_uses_headers():
    stored = dlq.read_dead_letter(1, 2, b"k", b'{"type": "page"}', [
        ("x-original-topic", b"events.view"), ("x-original-partition", b"5"),
        ("x-original-offset", b"77"), ("x-reason", b"boom")])
    assert (stored.original_topic, stored.original_partition, stored.original_offset,
            stored.reason, stored.event) == ("events.view", 5, 77, "boom", {"type": "page"})


def test_replay_of_fixed_collector_reject_is_normalized_as_when_received():
    raw = make_event(timestamp="2026-11-01T09:00:00Z", sentAt="nope")
    rejection = normalize(raw, index=0)
    letter = dlq.dead_letter_for_rejection(rejection, topic="events.click", key_source="web",
                                             now=NOW)
    stored = dlq.read_dead_letter(0, 0, letter.key, letter.value, letter.headers)
    kind_topics = {"click": "events.click", "view": "events.view", "social": "events.social",
              "identify": "events.identify"}
    still = replays.plan_replay(stored, topics=kind_topics, now=NOW + timedelta(days=1))
    assert isinstance(still, Rejection) and still.field == "/sentAt"
    fixed = dict(raw, sentAt="2026-11-01T09:00:05Z")
    replay = replays.plan_replay(stored, topics=kind_topics, fixed_event=fixed,
                               now=NOW + timedelta(days=1))
    assert isinstance(replay, replays.Replay) and replay.topic == "events.click"
    doc = orjson.loads(replay.value)
    # Skew correction against the original receive time, not the replay's.
    assert doc["timestamp"] == "2026-11-01T09:59:55Z" and doc["messageId"] == "m-1"


def test_replay_of_processing_reject_is_checked_against_its_topic():
    value = orjson.dumps({"type": "track", "event": "x", "userId": "u", "messageId": "m",
                          "timestamp": "bad"})
    invalid = validate.validate_record("events.click", 0, 3, b"u", value)
    assert isinstance(invalid, InvalidRecord)
    letter = dlq.dead_letter_for_record(invalid, NOW)
    stored = dlq.read_dead_letter(0, 0, letter.key, letter.value, letter.headers)
    kind_topics = {"click": "events.click", "view": "events.view", "social": "events.social",
              "identify": "events.identify"}
    assert isinstance(replays.plan_replay(stored, topics=kind_topics, now=NOW), Rejection)
    fixed = {**stored.event, "timestamp": "2026-11-01T10:00:00Z"}
    replay = replays.plan_replay(stored, topics=kind_topics, fixed_event=fixed, now=NOW)
    assert isinstance(replay, replays.Replay)
    assert replay.topic == "events.click" and orjson.loads(replay.value) == fixed


# --- systemic failure --------------------------------------------------------------------------


def test_detector_stops_when_nearly_everything_fails():
    detector = systemic.SystemicFailureDetector(systemic.DlqLimit(0.9, window=100, min_events=50))
    detector.observe(40, ["/type: bad"] * 2)  # a few bad events: fine
    detector.observe(0, ["/type: bad"] * 5)  # 7 of 47 seen, under min_events anyway
    with pytest.raises(systemic.SystemicFailure, match="STREAMS_DLQ_MAX_INVALID_RATIO") as info:
        detector.observe(0, ["value is not JSON: x"] * 100)
    assert "value is not JSON" in str(info.value) and "100 of the last 100" in str(info.value)


def test_detector_waits_for_min_events_and_forgets_old_outcomes():
    detector = systemic.SystemicFailureDetector(systemic.DlqLimit(0.9, window=50, min_events=20))
    detector.observe(0, ["bad"] * 19)  # all bad, but fewer than min_events
    detector.observe(50, [])  # the window now holds only good ones
    assert detector.invalid_ratio == 0.0
    detector.observe(10, ["bad"] * 40)  # 40 of 50 = 80% < 90%
    assert detector.invalid_ratio == pytest.approx(0.8)
