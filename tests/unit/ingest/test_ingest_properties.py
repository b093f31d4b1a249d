"""Properties of the collector's normalization, over generated Segment events: what it
writes passes the processing side's validation unchanged, on the topic it was routed to,
and the clock-skew correction keeps the device's own intervals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.events import dlq, validate
from streams.events import time as etime
from streams.events.models import SOCIAL_CHANNELS, ValidEvent
from streams.ingest import logic
from streams.ingest.models import RoutedEvent

NOW = datetime(2026, 11, 1, 10, 0, 0, tzinfo=UTC)
TOPICS = {"click": "events.click", "view": "events.view", "social": "events.social",
          "identify": "events.identify"}

# Control and format characters (Cc, Cf) are refused in identifiers (streams/events/limits.py).
ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs", "Cc", "Cf"]), min_size=1,
              max_size=40)
# Hypothesis takes naive bounds and attaches the zone itself.
moments = st.datetimes(min_value=datetime(2020, 1, 1),  # noqa: DTZ001
                       max_value=datetime(2030, 1, 1),  # noqa: DTZ001
                       timezones=st.just(UTC))
# NUL is refused anywhere (streams/events/limits.py); tests/unit/events/test_limits.py
# generates it, and the collector and the worker must then agree. Lone surrogates cannot
# arrive in a JSON body (orjson refuses them when it parses the request), so none here.
texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
json_scalars = st.none() | st.booleans() | st.integers(-10**9, 10**9) | texts
props = st.dictionaries(st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                                min_size=1,
                                max_size=10), json_scalars, max_size=5)


@st.composite
def segment_events(draw):
    event_type = draw(st.sampled_from(["track", "page", "screen", "identify", "alias"]))
    event: dict = {"type": event_type}
    if event_type == "alias":
        event["previousId"] = draw(ids)
        event["userId"] = draw(ids)
    else:
        who = draw(st.sampled_from(["user", "anon", "both"]))
        if who in ("user", "both"):
            event["userId"] = draw(ids)
        if who in ("anon", "both"):
            event["anonymousId"] = draw(ids)
    if event_type == "track":
        event["event"] = draw(st.sampled_from(["Post Liked", "Product Clicked", "Shared",
                                               "Order Completed", "Followed"]))
    properties = draw(props)
    if draw(st.booleans()):
        properties["channel"] = draw(st.sampled_from(["facebook", "x", "IG", "email", "sms"]))
    event["properties"] = properties
    if draw(st.booleans()):
        event["messageId"] = draw(ids)
    if draw(st.booleans()):
        event["timestamp"] = draw(moments).isoformat()
    return event


@settings(max_examples=300, deadline=None)
@given(event=segment_events(),
       key_source=st.sampled_from(["web", "mobile", "smartwatch", *SOCIAL_CHANNELS]),
       skew=st.integers(-3600, 3600), latency_ms=st.integers(0, 5000))
def test_collector_output_passes_processing_validation_on_its_topic(event, key_source, skew,
                                                                    latency_ms):
    received = NOW
    sent = received - timedelta(milliseconds=latency_ms) + timedelta(seconds=skew)
    result = logic.normalize_event(event, index=None, path_type=None, key_source=key_source,
                                   received_at=received, sent_at=etime.format_time(sent))
    assert isinstance(result, RoutedEvent), result
    checked = validate.validate_record(TOPICS[result.kind], 0, 0, result.key.encode(),
                                    result.value)
    assert isinstance(checked, ValidEvent), checked.reason
    doc = orjson.loads(result.value)
    assert checked.payload == doc and checked.message_id == result.message_id
    assert result.key == (event.get("userId") or event.get("anonymousId"))
    assert (result.kind == "social") == bool(doc.get("socialChannel"))
    if "timestamp" in event:
        # The device's interval from event to send is kept, ending at receivedAt, unless
        # that puts the event outside the window around receipt: then it is at its edge.
        original = etime.parse_time(event["timestamp"])
        corrected = etime.parse_time(doc["timestamp"])
        skewed = received - (etime.parse_time(doc["sentAt"]) - original)
        limits = validate.DEFAULT_LIMITS
        assert corrected == min(max(skewed, received - limits.max_past),
                                received + limits.max_future)
        assert checked.event_time == corrected


@settings(max_examples=200, deadline=None)
@given(value=st.binary(max_size=200) | st.builds(orjson.dumps, st.dictionaries(
    st.sampled_from(["type", "userId", "messageId", "timestamp", "event"]), json_scalars)),
    topic=st.sampled_from(list(TOPICS.values())))
def test_validate_record_never_raises_and_every_invalid_record_makes_a_valid_dead_letter(
        value, topic):
    from streams.events.schemas import default_schemas

    result = validate.validate_record(topic, 1, 2, b"k", value)
    if isinstance(result, ValidEvent):
        return
    letter = dlq.dead_letter_for_record(result, NOW)
    assert default_schemas().dlq.is_valid(orjson.loads(letter.value))
    assert letter.header("x-reason") and letter.header("x-original-topic") == topic
