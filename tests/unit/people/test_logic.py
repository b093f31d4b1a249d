"""The person page's pure logic: search parsing, timeline pages, the identity graph,
told-and-did and messages, from rows built by the real fold (``profiles.logic.replay``)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.identity.models import IdentityRules
from streams.people import logic
from streams.people.models import Cursor, FirstSeen, MessageRow, PersonRows
from streams.profiles.logic import replay
from streams.profiles.models import FoldEvent, profile_id_for

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
RULES = IdentityRules()


def ev(mid: str, minute: int, *ids: str, **kw) -> FoldEvent:
    return FoldEvent(message_id=mid, time=f"2026-03-01T10:{minute:02d}:00.000000Z",
                     type=kw.pop("type", "track"), identifiers=ids, **kw)


EVENTS = [
    ev("m1", 0, "anonymous_id:a1", type="page", source="web", item="sku-1", category="shoes"),
    ev("m2", 1, "anonymous_id:a2", "device_id:phone-1", type="screen", source="mobile",
       device={"id": "phone-1", "type": "ios"}, item="sku-2"),
    ev("m3", 2, "anonymous_id:a2", "user_id:u1", "email:ann@example.test", type="identify",
       traits={"name": "Ann"}, consent={"email": True, "push": False},
       timezone="Europe/Paris"),
    ev("m4", 3, "anonymous_id:a1", "user_id:u1", type="alias"),
    ev("m5", 4, "user_id:u1", "anonymous_id:null", "device_id:watch-1", source="smartwatch",
       event="Workout Shared"),
    ev("m6", 5, "user_id:u1", "user_id:u9", source="social", channel="instagram",
       event="Post Liked"),
]


def first_seen(events: list[FoldEvent]) -> list[FirstSeen]:
    """What the store's DISTINCT ON query returns: each identifier's earliest event."""
    out: dict[str, FirstSeen] = {}
    for e in sorted(events, key=lambda e: e.key):
        for i in e.identifiers:
            out.setdefault(i, FirstSeen(i, e.message_id, e.time, e.type, e.event, e.source,
                                        e.channel, e.identifiers))
    return list(out.values())


@pytest.fixture(scope="module")
def folded():
    graph = replay(EVENTS, RULES)
    (pid,) = graph.profiles
    return graph, graph.profiles[pid]


def test_parse_query_profile_id_typed_and_bare_values():
    pid = profile_id_for("m1")
    assert logic.parse_query(f"  {pid.upper()} ").profile_id == pid
    assert logic.parse_query("email: ANN@Example.test").identifiers == ("email:ann@example.test",)
    bare = logic.parse_query("phone-1").identifiers
    assert "device_id:phone-1" in bare and "anonymous_id:phone-1" in bare
    assert "instagram_handle:ann" in logic.parse_query("@Ann").identifiers
    with pytest.raises(ValueError, match="valid email"):
        logic.parse_query("email:not-an-email")
    with pytest.raises(ValueError):
        logic.parse_query("   ")


def test_cursor_round_trip_and_garbage():
    cursor = Cursor("2026-03-01T10:00:00.000000Z", "m/1=x")
    token = logic.encode_cursor(cursor)
    assert "/" not in token and "=" not in token
    assert logic.decode_cursor(token) == cursor
    for bad in ("", "!!", logic.encode_cursor(Cursor("t", "m"))[:-3] + "x", "WzEsMl0"):
        with pytest.raises(ValueError):
            logic.decode_cursor(bad)


def test_timeline_page_lanes_and_next_cursor():
    docs = [e.to_json() for e in sorted(EVENTS, key=lambda e: e.key, reverse=True)]
    page = logic.timeline_page(docs[:3], limit=2)
    assert [e["message_id"] for e in page["events"]] == ["m6", "m5"]
    assert logic.decode_cursor(page["next"]) == Cursor(EVENTS[4].time, "m5")
    assert [e["lane"] for e in page["events"]] == ["instagram", "smartwatch"]
    assert page["events"][0]["kind"] == "Post Liked"
    last = logic.timeline_page(docs, limit=len(docs))
    assert last["next"] is None
    mobile = next(e for e in last["events"] if e["message_id"] == "m2")
    assert (mobile["lane"], mobile["device"], mobile["kind"], mobile["item"]) == (
        "mobile", "phone-1", "screen", "sku-2")


def test_identity_graph_statuses_links_and_merges(folded):
    graph, profile = folded
    merges = [dict(m) for m in graph.new_merges]
    view = logic.identity_graph(profile, merges, first_seen(EVENTS), RULES)
    states = {i["key"]: i for g in view["groups"] for i in g["identifiers"]}
    assert states["email:ann@example.test"]["status"] == "held"
    assert states["email:ann@example.test"]["first_event"] == "m3"
    assert (states["anonymous_id:null"]["status"], states["anonymous_id:null"]["rule"]) == (
        "blocked", "blocked_value")
    assert (states["user_id:u9"]["status"], states["user_id:u9"]["rule"]) == (
        "dropped", "limit:user_id")
    # Groups follow the identity priority: user_id first, anonymous_id last.
    types = [g["type"] for g in view["groups"]]
    assert types[0] == "user_id" and types[-1] == "anonymous_id"
    # m3 carried three identifiers: it is what linked them.
    link = next(x for x in view["links"] if x["message_id"] == "m3")
    assert link["identifiers"] == ["anonymous_id:a2", "email:ann@example.test", "user_id:u1"]
    # One merge: m2's profile (a2) absorbed into m1's by the alias m4.
    assert [(m["merged"], m["message_id"], m["rule"]) for m in view["merges"]] == [
        (profile_id_for("m2"), "m4", "shared_identifier")]
    drawing = view["drawing"]
    ids = {n["id"]: n for n in drawing["nodes"]}
    edges = {(e["from"], e["to"]): e["status"] for e in drawing["edges"]}
    assert edges[("e:m4", f"m:{profile_id_for('m2')}")] == "merged"
    assert edges[("e:m5", "i:anonymous_id:null")] == "blocked"
    assert edges[("e:m6", "i:user_id:u9")] == "dropped"
    assert all(f in ids and t in ids for f, t in edges)
    # Every node lies inside the drawing; no two nodes share a place.
    places = [(n["x"], n["y"]) for n in drawing["nodes"]]
    assert len(set(places)) == len(places)
    assert all(0 <= x < drawing["width"] and 0 <= y < drawing["height"] for x, y in places)


def test_told_and_did_consent_states_and_hours_in_zone(folded):
    _, profile = folded
    out = logic.told_and_did(profile, NOW)
    consent = {c["channel"]: c["state"] for c in out["told"]["consent"]}
    assert consent["email"] == "granted" and consent["push"] == "refused"
    assert consent["linkedin"] == "not asked"
    assert out["told"]["traits"] == {"name": "Ann"}
    did = out["did"]
    assert did["counts"]["total"] == 6 and did["hours_zone"] == "Europe/Paris"
    # Events at 10:xx UTC without a zone of their own: 11:xx in Paris in March.
    assert did["active_hours"][11] == 4 and sum(did["active_hours"]) == 4
    assert [c["name"] for c in did["categories"]] == ["shoes"]
    assert {r["item"] for r in did["recently_viewed"]} == {"sku-1", "sku-2"}
    assert [d["key"] for d in did["devices"]] == ["phone-1"]


def msg(mid: str, status: str, due_minute: int, **kw) -> MessageRow:
    due = datetime(2026, 3, 2, 11, due_minute, tzinfo=UTC)
    return MessageRow(message_id=mid, rule=kw.pop("rule", "welcome"), status=status,
                      reason=kw.pop("reason", None), channel=kw.pop("channel", None),
                      due_at=due, expires_at=due, scheduled_at=due, decided_at=None,
                      sent_at=kw.pop("sent_at", None),
                      intent={"triggerEvents": ["m1"], "originChannel": "web", "facts": {}},
                      message=kw.pop("message", None))


def test_messages_view_counts_channels_and_why():
    rows = [msg("a", "pending", 1), msg("b", "sent", 2, channel="email",
                                          message={"channel": "email", "why": {"time": "now"}}),
            msg("c", "suppressed", 3, reason="no_consent"), msg("d", "held_out", 0)]
    view = logic.messages_view(rows, NOW)
    assert view["counts"] == {"pending": 1, "sent": 1, "suppressed": 1, "held_out": 1}
    assert [m["message_id"] for m in view["messages"]] == ["c", "b", "a", "d"]
    by_id = {m["message_id"]: m for m in view["messages"]}
    assert by_id["b"]["why"] == {"time": "now"} and by_id["b"]["channel"] == "email"
    assert by_id["a"]["planned_channel"] == "web" and by_id["a"]["overdue"] is True
    assert by_id["c"]["why"]["triggerEvents"] == ["m1"] and by_id["c"]["reason"] == "no_consent"


def test_person_page_bundles_everything(folded):
    graph, profile = folded
    docs = [e.to_json() for e in sorted(EVENTS, key=lambda e: e.key, reverse=True)]
    rows = PersonRows(profile=profile, merges=list(graph.new_merges),
                      first_seen=first_seen(EVENTS), scanned_all=True,
                      messages=[msg("a", "pending", 1)], events=docs[:4], has_more_events=True)
    page = logic.person_page(rows, RULES, NOW, limit=3)
    assert page["id"] == profile_id_for("m1") and page["identity"]["complete"] is True
    assert len(page["timeline"]["events"]) == 3 and page["timeline"]["next"]
    assert page["messages"]["available"] is True and page["messages"]["counts"] == {"pending": 1}
    assert page["created"] == {"time": EVENTS[0].time, "message_id": "m1"}
