"""A digest of what ``logic.decide_send`` decides and renders over many generated cases,
for a differential check of a change to the emit path: run it on two trees and compare.

    PYTHONPATH=OLD_TREE python scripts/decide_digest.py N old.txt
    PYTHONPATH=NEW_TREE python scripts/decide_digest.py N new.txt
    cmp old.txt new.txt

Cases are seeded (the same N gives the same cases on both trees). Each person is built
the way the emit loop builds one (``Person.from_profile`` from a profile document and
compact stored events, in random order and with duplicates), intents are planned from
all or part of their events (so some are superseded or exited) or altered (unknown
rule, other kind), stored and read back (``to_json``/``from_json``), and decided against
a random sent history at several moments (before due, at due, in quiet hours, after
expiry). Each case writes one line: the person and intent as built, the decision and,
for a send, the message exactly as ``orjson`` encodes it. Uses only public APIs, so it
runs unchanged on the code before and after. No database, no Kafka.
"""

from __future__ import annotations

import collections
import hashlib
import random
import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import orjson

from streams.triggers.logic import decide_send, plan_schedules
from streams.triggers.models import Intent, Person, Send, SentRecord
from streams.triggers.rules import load_rules

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # a Monday
NAMES = ("Product Viewed", "Order Completed", "Product Added", "Video Started",
         "Video Completed", "Post Liked", "Comment Posted", "Checkout Started",
         "Home", "liked a post", "shared", "Mention", "product_viewed", None)
ZONES = (None, "UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata",
         "Australia/Lord_Howe", "Not/AZone", "")
CHANNEL_KEYS = ("email", "push", "watch", "smartwatch", "web", "in_app", "inApp",
                "facebook", "instagram", "twitter", "linkedin", "social")


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _rules():
    base = load_rules()
    data = base.model_dump()
    variants = [base]
    # Every rule sent at once (no control group), with and without quiet hours, best
    # hour for all, exits on goal for all.
    for change in ({"control_share": 0.0}, {"control_share": 0.0, "quiet_hours": False},
                   {"control_share": 0.5, "send_at": "best_hour"},
                   {"control_share": 0.0, "exit_on_goal": True, "prefer_origin": False}):
        variants.append(type(base).model_validate(
            {**data, "rules": {k: {**data["rules"][k], **change} for k in data["rules"]}}))
    # Browse abandonment after many views (more items than a message recommends).
    many = {**data, "rules": {**data["rules"], "browse_abandonment": {
        **data["rules"]["browse_abandonment"], "min_views": 6, "control_share": 0.0}}}
    variants.append(type(base).model_validate(many))
    off = {**data, "rules": {k: {**v, "enabled": k != "welcome"} for k, v in
                             data["rules"].items()},
           "caps": {"per_day": 1, "per_week": 2}}
    variants.append(type(base).model_validate(off))
    return variants


def _event(rnd: random.Random, i: int, pid: int, dense: bool) -> dict:
    # dense: a browsing session (views of many items within hours), else weeks of events
    source = rnd.choice(("web", "web", "mobile", "smartwatch", "social", "server", None))
    kind = rnd.choice(("page", "screen") if dense else
                      ("track", "track", "page", "screen", "identify"))
    t = T0 + timedelta(minutes=rnd.randint(0, 60 * 6 if dense else 60 * 24 * 40),
                       microseconds=rnd.choice((0, rnd.randint(1, 999_999))))
    doc: dict = {"m": f"p{pid}-e{i}", "t": _iso(t), "y": kind}
    if source is not None:
        doc["s"] = source
    if source == "social":
        doc["c"] = rnd.choice(("instagram", "twitter", "facebook", "linkedin"))
    name = rnd.choice(NAMES)
    if name is not None:
        doc["e"] = name
    if rnd.random() < (0.9 if dense else 0.5):
        doc["g"] = rnd.choice(("running",) if dense else ("running", "hiking", ""))
    if rnd.random() < (0.9 if dense else 0.5):
        doc["p"] = rnd.choice(("shoe", "tent", "sock", "", *(f"item-{k}" for k in range(12))))
    if source in ("mobile", "smartwatch") and rnd.random() < 0.9:
        doc["d"] = {"id": rnd.choice(("phone-1", "phone-2", "watch-1")),
                    "type": rnd.choice(("ios", "android", "watch"))}
    ids = []
    if rnd.random() < 0.7:
        ids.append(f"anonymous_id:anon-{rnd.randint(1, 3)}")
    if rnd.random() < 0.2:
        ids.append(f"anonymous_id:anon-{rnd.randint(4, 6)}")
    if rnd.random() < 0.3:
        ids.append("user_id:u1")
    if ids:
        doc["i"] = ids
    return doc


def _lww(rnd: random.Random, value):
    # A profile section entry: usually [value, time, msg], sometimes a bare value.
    return [value, _iso(T0), "m"] if rnd.random() < 0.8 else value


def _profile(rnd: random.Random, pid: int) -> dict:
    ids = [f"anonymous_id:anon-{k}" for k in range(1, rnd.randint(1, 4))]
    for maybe in ("email:ada@example.com", "email:b@example.com", "device_id:phone-1",
                  "device_id:watch-1", "instagram_handle:ada", "twitter_id:42",
                  "facebook_id:7", "linkedin_handle:ada"):
        if rnd.random() < 0.4:
            ids.append(maybe)
    traits: dict = {}
    for name, values in (("email", (" Ada@Example.com ", "c@example.com", 3)),
                         ("name", ("Ada Lovelace", "  ", None)),
                         ("firstName", ("Ada",)), ("first_name", ("ada",)),
                         ("locale", ("de-DE", "", 5)),
                         ("quietHours", ({"start": "23:00", "end": "07:30"},
                                         {"start": "07:00", "end": "09:00"},
                                         {"start": "25:00", "end": "07:00"},
                                         {"start": "9:00", "end": "10:00"}, "x"))):
        if rnd.random() < 0.4:
            traits[name] = _lww(rnd, rnd.choice(values))
    prefs: dict = {}
    for name, values in (("preferredChannel", ("email", "push", "web", "instagram", "fax")),
                         ("channel", ("watch", "twitter")),
                         ("categories", (["running", "hiking"], ["tents", 3], "running")),
                         ("language", ("fr", "")), ("locale", ("es",))):
        if rnd.random() < 0.3:
            prefs[name] = _lww(rnd, rnd.choice(values))
    consent = {k: _lww(rnd, rnd.choice((True, False, True, "yes")))
               for k in CHANNEL_KEYS if rnd.random() < 0.35}
    zone = rnd.choice(ZONES)
    hours_local = {str(rnd.randint(0, 23)): rnd.randint(1, 9)
                   for _ in range(rnd.randint(0, 4))}
    hours_utc = {str(rnd.randint(0, 23)): rnd.randint(1, 9) for _ in range(rnd.randint(0, 3))}
    items = ("shoe", "tent", "sock", "map", "cap", "rope", "boot", "lamp")
    recent = {it: [_iso(T0 + timedelta(hours=rnd.randint(0, 99))), f"m{it}"]
              for it in rnd.sample(items, rnd.randint(0, 7))}
    return {"id": f"00000000-0000-4000-8000-{pid:012d}", "identifiers": ids,
            "traits": traits, "preferences": prefs, "consent": consent,
            "timezone": (_lww(rnd, zone) if zone is not None else None),
            "hours": {"local": hours_local, "utc": hours_utc} if rnd.random() < 0.9 else None,
            "affinity": {"category": {"running": rnd.randint(0, 5)},
                         "item": {it: rnd.randint(1, 5)
                                  for it in rnd.sample(items, rnd.randint(0, 6))}},
            "recent": recent}


def _history(rnd: random.Random, intents: list[Intent], now: datetime) -> list[SentRecord]:
    out = []
    for _ in range(rnd.choice((0, 0, 1, 2, 4))):
        source = rnd.choice(intents) if intents and rnd.random() < 0.6 else None
        out.append(SentRecord(
            now - timedelta(hours=rnd.choice((-1, 1, 5, 20, 30, 100, 200))),
            rnd.choice(("email", "push", "web")),
            source.rule if source else rnd.choice(("welcome", "x")),
            source.message_id if source and rnd.random() < 0.3 else f"other-{rnd.random()}"))
    return out


def _line(person: Person, intent: Intent, decision) -> bytes:
    head = f"{person!r}|{intent!r}|"
    if isinstance(decision, Send):
        body = (f"Send({decision.channel!r}, {decision.destination!r})|".encode()
                + orjson.dumps(decision.message))
    else:
        body = repr(decision).encode()
    return head.encode() + body + b"\n"


def main(n: int, out_path: str) -> None:
    rnd = random.Random(20261203)
    variants = _rules()
    counts: collections.Counter = collections.Counter()
    digest = hashlib.sha256()
    with open(out_path, "wb") as out:
        for pid in range(n):
            doc = _profile(rnd, pid)
            dense = rnd.random() < 0.2
            count = rnd.randint(0, 40 if dense else 25)
            events = [_event(rnd, i, pid, dense) for i in range(count)]
            if events and rnd.random() < 0.3:
                events.append(dict(rnd.choice(events)))  # a duplicate
            rnd.shuffle(events)
            rules = rnd.choice(variants)
            person = Person.from_profile(doc, events)
            if rnd.random() < 0.03:
                person = Person.gone(person.profile_id)
            full = Person.from_profile(doc, events)
            part = Person.from_profile(doc, events[: rnd.randint(0, len(events))])
            intents = plan_schedules(full, rules) + plan_schedules(part, rules)
            if intents and rnd.random() < 0.2:
                i = rnd.choice(intents)
                intents.append(replace(i, rule=rnd.choice(("nope", i.rule)),
                                       kind=rnd.choice(("welcome", "social_follow_up"))))
            for intent in intents:
                intent = Intent.from_json(orjson.loads(orjson.dumps(intent.to_json())))
                for now in (intent.due_at - timedelta(minutes=1), intent.due_at,
                            intent.due_at + timedelta(minutes=rnd.randint(0, 60 * 30)),
                            intent.expires_at + timedelta(seconds=1)):
                    history = _history(rnd, intents, now)
                    decision = decide_send(intent, person, tuple(history), rules, now)
                    counts[type(decision).__name__ + ":" + str(getattr(
                        decision, "reason", ""))] += 1
                    line = _line(person, intent, decision)
                    digest.update(line)
                    out.write(line)
    print(f"{sum(counts.values())} decisions, sha256 {digest.hexdigest()[:16]}")
    for key, count in sorted(counts.items()):
        print(f"  {key}: {count}")


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2])
