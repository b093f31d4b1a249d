"""The profile fold: decoding, commutative aggregates, merges, order independence."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.identity.logic import usable_identifiers
from streams.profiles.decode import decode_envelope, decode_record, derive_source_channel
from streams.profiles.logic import (
    Graph,
    canonical,
    fold_event,
    merge_profiles,
    needs_replay,
    new_profile,
    profile_view,
    replay,
)
from streams.profiles.models import (
    PROFILE_NAMESPACE,
    FoldEvent,
    InvalidEvent,
    iso,
    profile_id_for,
)
from streams.reference import expected_state, read_record, state_diff
from streams.reference.documents import document
from tests.event_strategies import TEST_RULES, event_logs
from tests.long_profile import examples
from tests.production_state import production_state

PROPS = settings(max_examples=examples(60, 400), deadline=None)


def make_event(**overrides) -> dict:
    doc = {"type": "page", "messageId": "m-1", "anonymousId": "a-1", "name": "Home",
           "timestamp": "2026-03-01T10:00:00Z", "properties": {"product_id": "sku-1",
                                                                "category": "shoes"}}
    doc.update(overrides)
    return doc


def decoded(logs: list[dict]) -> list[FoldEvent]:
    out = []
    for doc in logs:
        ev = decode_envelope(doc)
        if isinstance(ev, FoldEvent):
            out.append(ev)
    return out


def fold_all(events: list[FoldEvent]) -> dict:
    profile = new_profile("p", ("", ""))
    for ev in events:
        fold_event(profile, ev)
    return profile


# --- decoding ------------------------------------------------------------------------
def test_decode_extracts_identifiers_and_facts():
    ev = decode_envelope(make_event(
        type="identify", userId="U1", traits={"email": " Ann@X.test", "plan": "pro",
                                              "preferences": {"genre": "jazz"},
                                              "consent": {"email": True, "sms": "yes"}},
        context={"device": {"id": "d-1", "type": "ios"}, "timezone": "Europe/Paris",
                 "externalIds": [{"id": "@Ada", "type": "twitter_handle"},
                                 {"id": "c-9", "type": "crm_id"}]},
    ))
    assert isinstance(ev, FoldEvent)
    assert ev.identifiers == ("anonymous_id:a-1", "crm_id:c-9", "device_id:d-1",
                              "email:ann@x.test", "twitter_handle:ada", "user_id:U1")
    assert ev.traits == {"email": " Ann@X.test", "plan": "pro"}
    assert ev.preferences == {"genre": "jazz"}
    assert ev.consent == {"email": True}  # a non-boolean consent is not consent
    assert ev.source == "mobile" and ev.timezone == "Europe/Paris"
    assert ev.time == "2026-03-01T10:00:00.000000Z"


def test_decode_rejects_with_a_named_field():
    assert decode_envelope([]).reason == "event is not a JSON object"
    assert "type" in decode_envelope(make_event(type="bogus")).reason
    assert "messageId" in decode_envelope(make_event(messageId=None)).reason
    assert "userId/anonymousId" in decode_envelope(make_event(anonymousId=None)).reason
    assert "timestamp" in decode_envelope(make_event(timestamp="yesterday")).reason
    bad = decode_envelope({k: v for k, v in make_event().items() if k != "timestamp"})
    assert isinstance(bad, InvalidEvent) and "timestamp" in bad.reason


def test_decode_record_derives_a_stable_message_id():
    raw = orjson.dumps({k: v for k, v in make_event().items() if k != "messageId"})
    a, b = decode_record(raw), decode_record(raw)
    assert isinstance(a, FoldEvent) and a.message_id == b.message_id
    # The same derivation as processing-side validation (one rule, in the event contract).
    from streams.events.derive import message_id_for_record
    assert a.message_id == message_id_for_record(raw)
    assert decode_record(b"{nope").reason.startswith("value is not JSON")
    assert decode_record(b"").reason == "empty value"


def test_source_and_channel_as_validation_derives_them():
    assert derive_source_channel({"type": "track", "source": "social",
                                  "socialChannel": "instagram"}) == ("social", "instagram")
    assert derive_source_channel({"type": "page", "source": "web"}) == ("web", None)
    assert derive_source_channel({"context": {"os": {"name": "watchOS"}}}) == (
        "smartwatch", None)
    assert derive_source_channel({"context": {"os": {"name": "Android"}}}) == (
        "mobile", None)
    assert derive_source_channel({"context": {"userAgent": "Mozilla/5.0"}}) == ("web", None)
    assert derive_source_channel({"type": "track", "socialChannel": "LinkedIn"}) == (
        "social", "linkedin")
    # properties.channel is the collector's hint for routing; on events.click it is not social
    assert derive_source_channel({"type": "track", "properties": {"channel": "LinkedIn"}}) == (
        "web", None)
    assert derive_source_channel({"type": "screen"}) == ("mobile", None)
    assert derive_source_channel({"type": "page", "properties": {"channel": "fb"}}) == (
        "web", None)


# --- the fold ----------------------------------------------------------------------
def test_fold_counts_affinities_recent_hours_devices():
    events = decoded([
        make_event(messageId="m1", context={"timezone": "Asia/Kolkata",
                                            "device": {"id": "d1", "type": "ios"}}),
        make_event(messageId="m2", type="track", event="Order Completed",
                   timestamp="2026-03-01T11:00:00Z"),
        make_event(messageId="m3", type="identify", traits={"plan": "pro"},
                   timestamp="2026-03-01T09:00:00Z"),
    ])
    p = fold_all(events)
    assert p["counts"]["total"] == 3
    assert p["counts"]["type"] == {"page": 1, "track": 1, "identify": 1}
    assert p["counts"]["event"] == {"Order Completed": 1}
    assert p["affinity"] == {"category": {"shoes": 6}, "item": {"sku-1": 6}}
    assert list(p["recent"]) == ["sku-1"]
    assert p["hours"] == {"local": {"15": 1}, "utc": {"11": 1}}  # 10:00Z: 15:30 in Kolkata
    assert p["seen"]["all"] == ["2026-03-01T09:00:00.000000Z", "2026-03-01T11:00:00.000000Z"]
    assert p["traits"]["plan"][0] == "pro"
    assert list(p["devices"]) == ["d1"]
    assert p["timezone"][0] == "Asia/Kolkata"


def test_lww_traits_tie_broken_by_message_id():
    a = make_event(type="identify", messageId="m-b", traits={"plan": "b"})
    b = make_event(type="identify", messageId="m-a", traits={"plan": "a"})
    assert fold_all(decoded([a, b]))["traits"]["plan"][0] == "b"
    assert fold_all(decoded([b, a]))["traits"]["plan"][0] == "b"


def test_recent_items_keeps_the_newest_ten():
    docs = [make_event(messageId=f"m{i}", properties={"product_id": f"i{i}"},
                       timestamp=f"2026-03-01T10:{i:02d}:00Z") for i in range(15)]
    p = fold_all(decoded(docs))
    assert sorted(p["recent"]) == sorted(f"i{i}" for i in range(5, 15))


def test_profile_view_shifts_utc_hours_into_the_person_zone():
    p = fold_all(decoded([make_event(), make_event(
        messageId="m2", type="identify", context={"timezone": "America/New_York"})]))
    view = profile_view(p, datetime(2026, 7, 1, tzinfo=UTC))
    assert view["timezone"] == "America/New_York"
    assert view["behaviour"]["active_hours"][6] == 1  # 10:00Z = 06:00 EDT
    assert view["identifiers"] == []


def reference_document(logs: list[dict]) -> dict:
    """The reference's document of all of ``logs``' events in one profile (first copy of
    a message id), shaped like ``fold_all``'s (no identity part)."""
    facts: dict = {}
    for position, doc in enumerate(logs):
        fact = read_record(doc, position)
        if not isinstance(fact, str):
            facts.setdefault(fact.message_id, fact)
    doc = document("p", facts.values(), [], 0, []) if facts else new_profile("p", ("", ""))
    doc["created"] = ["", ""]
    return doc


@PROPS
@given(logs=event_logs(max_size=25), seed=st.randoms(use_true_random=False))
def test_fold_in_any_order_is_the_reference_document(logs, seed):
    events = canonical(decoded(logs))
    seed.shuffle(events)
    assert fold_all(events) == reference_document(logs)


@PROPS
@given(logs=event_logs(max_size=25), cut=st.integers(0, 25))
def test_merging_two_folds_equals_the_fold_of_both(logs, cut):
    events = canonical(decoded(logs))
    left, right = events[:cut], events[cut:]
    a, b = fold_all(left), fold_all(right)
    a["created"], b["created"] = ["1", "x"], ["2", "y"]
    merged = merge_profiles(a, b)
    whole = fold_all(events)
    whole["created"], whole["merges"] = ["1", "x"], 1
    assert merged == whole
    assert merge_profiles(b, a) | {"id": "p", "created": ["1", "x"]} == whole


# --- identity over a run --------------------------------------------------------------
def test_chain_of_identifiers_ends_in_one_profile_named_by_its_first_event():
    logs = [
        make_event(messageId="m3", anonymousId="a2", userId="u1",
                   timestamp="2026-03-01T12:00:00Z"),
        make_event(messageId="m1", anonymousId="a1", timestamp="2026-03-01T10:00:00Z"),
        make_event(messageId="m2", anonymousId="a2", timestamp="2026-03-01T11:00:00Z"),
        make_event(messageId="m4", anonymousId="a1", userId="u1",
                   timestamp="2026-03-01T13:00:00Z"),
    ]
    result = production_state(logs, TEST_RULES)
    assert list(result.profiles) == [profile_id_for("m1")]
    p = result.profiles[profile_id_for("m1")]
    assert p["identifiers"] == ["anonymous_id:a1", "anonymous_id:a2", "user_id:u1"]
    assert p["counts"]["total"] == 4 and p["merges"] == 1
    assert result.merges == [(profile_id_for("m1"), profile_id_for("m2"), "m4",
                              "shared_identifier", "2026-03-01T13:00:00.000000Z")]
    assert result.redirects == {profile_id_for("m2"): profile_id_for("m1")}


def test_shared_device_with_two_users_splits_and_records_why():
    logs = [
        make_event(messageId="m1", anonymousId="kiosk", userId="u1"),
        make_event(messageId="m2", anonymousId="kiosk", userId="u2",
                   timestamp="2026-03-01T10:05:00Z"),
    ]
    result = production_state(logs, TEST_RULES)
    by_user = {tuple(p["identifiers"]): p for p in result.profiles.values()}
    assert set(by_user) == {("anonymous_id:kiosk", "user_id:u1"), ("user_id:u2",)}
    note = by_user[("user_id:u2",)]["notes"][0]
    assert note[2:] == ["limit:user_id", "anonymous_id:kiosk"]


def test_blocked_only_event_is_skipped_with_a_reason():
    result = production_state([make_event(anonymousId="null")], TEST_RULES)
    assert result.profiles == {}
    assert result.skipped == {"m-1": "no_identifier"}


@PROPS
@given(logs=event_logs(max_size=30), seed=st.randoms(use_true_random=False))
def test_replay_in_any_order_with_copies_is_the_reference_state(logs, seed):
    shuffled = list(logs) + list(logs[: len(logs) // 3])
    seed.shuffle(shuffled)
    problems = state_diff(expected_state(logs, TEST_RULES),
                          production_state(shuffled, TEST_RULES))
    assert not problems, problems


def test_invariant_no_two_profiles_share_an_identifier():
    logs = [make_event(messageId=f"m{i}", anonymousId=f"a{i % 3}", userId=f"u{i % 2}",
                       timestamp=f"2026-03-01T10:{i:02d}:00Z") for i in range(8)]
    result = production_state(logs, TEST_RULES)
    seen: dict[str, str] = {}
    for pid, p in result.profiles.items():
        for ident in p["identifiers"]:
            assert ident not in seen, f"{ident} in {pid} and {seen[ident]}"
            seen[ident] = pid
            assert result.owners[ident] == pid


# --- the worker's incremental scheme, simulated in memory -----------------------------
class ComponentSimulator:
    """The store's algorithm without PostgreSQL: interaction components, appended when
    new events sort after the component, replayed from their events otherwise."""

    def __init__(self, rules):
        self.rules = rules
        self.component_of_id: dict[str, int] = {}
        self.components: dict[int, dict] = {}  # cid -> {"events": [...], "graph": Graph}
        self.seen: set[str] = set()
        self.next_cid = 1
        self.replays = 0

    def write_batch(self, events: list[FoldEvent]) -> None:
        fresh = []
        for ev in events:
            if ev.message_id not in self.seen:
                self.seen.add(ev.message_id)
                fresh.append(ev)
        # group new events with the components their identifiers belong to
        parent: dict = {}

        def find(x):
            while parent.setdefault(x, x) != x:
                x = parent[x]
            return x

        def usable(ev):
            return usable_identifiers(ev.identifiers, self.rules)

        for ev in fresh:
            for ident in usable(ev):
                node = ("c", self.component_of_id[ident]) if ident in self.component_of_id \
                    else ("i", ident)
                parent[find(("e", ev.message_id))] = find(node)
        groups: dict = {}
        for ev in fresh:
            groups.setdefault(find(("e", ev.message_id)), []).append(ev)
        for root, new in groups.items():
            cids = sorted({c for (kind, c) in parent if kind == "c" and find((kind, c)) == root})
            old_events = [e for c in cids for e in self.components[c]["events"]]
            graphs = [self.components[c]["graph"] for c in cids]
            merged_graph = Graph(rules=self.rules)
            for g in graphs:
                merged_graph.owners.update(g.owners)
                merged_graph.profiles.update(g.profiles)
                merged_graph.mentioned |= g.mentioned
                if g.max_key and (merged_graph.max_key is None or merged_graph.max_key < g.max_key):
                    merged_graph.max_key = g.max_key
            if needs_replay(merged_graph.max_key, new):
                self.replays += 1
                merged_graph = replay(old_events + new, self.rules)
            else:
                for ev in canonical(new):
                    merged_graph.apply(ev)
            cid = cids[0] if cids else self.next_cid
            self.next_cid += 0 if cids else 1
            for c in cids[1:]:
                del self.components[c]
            self.components[cid] = {"events": old_events + new, "graph": merged_graph}
            for ev in new:
                for ident in usable(ev):
                    self.component_of_id[ident] = cid
            for c in cids[1:]:
                for ident, owner_c in list(self.component_of_id.items()):
                    if owner_c == c:
                        self.component_of_id[ident] = cid

    def profiles(self) -> dict[str, dict]:
        out = {}
        for comp in self.components.values():
            out.update(comp["graph"].profiles)
        return out


@PROPS
@given(logs=event_logs(max_size=30), seed=st.randoms(use_true_random=False),
       batch=st.integers(1, 7))
def test_incremental_components_equal_the_reference_in_any_arrival_order(logs, seed, batch):
    arrival = decoded(logs)
    seed.shuffle(arrival)
    sim = ComponentSimulator(TEST_RULES)
    for i in range(0, len(arrival), batch):
        sim.write_batch(arrival[i:i + batch])
    assert sim.profiles() == expected_state(logs, TEST_RULES).profiles


def test_out_of_order_arrival_is_replayed_not_appended():
    docs = [make_event(messageId="m2", anonymousId="kiosk", userId="u2",
                       timestamp="2026-03-01T10:05:00Z"),
            make_event(messageId="m1", anonymousId="kiosk", userId="u1")]
    sim = ComponentSimulator(TEST_RULES)
    for ev in decoded(docs):
        sim.write_batch([ev])
    assert sim.replays == 1
    assert sim.profiles() == expected_state(docs, TEST_RULES).profiles
    # In arrival order the kiosk would have stayed with u2; canonically it is u1's.
    owner = next(p for p in sim.profiles().values() if "anonymous_id:kiosk" in p["identifiers"])
    assert "user_id:u1" in owner["identifiers"]


def test_random_interleavings_many_seeds():
    rnd = random.Random(7)
    docs = [make_event(messageId=f"m{i}", anonymousId=f"a{rnd.randint(0, 3)}",
                       userId=rnd.choice([None, "u1", "u2"]),
                       timestamp=f"2026-03-01T10:{rnd.randint(0, 9):02d}:00Z")
            for i in range(20)]
    expected = expected_state(docs, TEST_RULES).profiles
    for _ in range(20):
        arrival = decoded(docs)
        rnd.shuffle(arrival)
        sim = ComponentSimulator(TEST_RULES)
        for ev in arrival:
            sim.write_batch([ev])
        assert sim.profiles() == expected


@given(st.text(max_size=200))
def test_profile_ids_are_uuid5_of_the_creating_message_id(message_id):
    assert profile_id_for(message_id) == str(uuid.uuid5(PROFILE_NAMESPACE, message_id))


@given(st.datetimes(timezones=st.timezones()))
def test_iso_is_the_utc_strftime_form(moment):
    expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if moment.astimezone(UTC).year >= 1000:
        assert iso(moment) == expected
    assert iso(moment.astimezone(UTC)) == iso(moment)
