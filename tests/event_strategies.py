"""Hypothesis strategies for event logs that reach every rule of identity resolution.

``event_logs`` draws the original small-pool logs (identifiers shared directly and through
chains, ties broken by message id, exact duplicates). ``rich_logs`` adds, for any rules
(the tight ``TEST_RULES`` or the production defaults): every identifier type (phone,
social ids and handles, custom ``externalIds``), episodes aimed at each rule (a limit
breached per type, the merge cap reached, merge chains of 3+), blocked values, duplicates
with the same and with a different body, invalid records, skewed and out-of-order times,
and forgets in the middle of the log. ``tests/unit/profiles/test_reference.py`` draws
them and fails when a rule is not reached.
"""

from __future__ import annotations

from hypothesis import strategies as st

from streams.identity.models import IdentityRules
from streams.reference import Forget

# Tight rules so that small logs reach every limit.
TEST_RULES = IdentityRules(limits={"user_id": 1, "email": 2}, default_limit=3, merge_cap=3)
DEFAULT_RULES = IdentityRules()  # the production defaults: limit 5, user_id 1, cap 100

ANON = [f"anon-{i}" for i in range(6)] + ["null", "0000"]
USERS = [f"user-{i}" for i in range(4)] + ["undefined"]
EMAILS = ["ann@example.test", "Ann@Example.test ", "bob@example.test", "cy@example.test"]
PHONES = ["+33 6 12 34 56 78", "0033612345678", "+1 (555) 010-9999", "12345", "n/a"]
DEVICES = ["dev-a", "dev-b", "dev-c", "00000000-0000-0000-0000-000000000000"]
# externalIds: social ids and handles under their several spellings, custom types.
EXTERNAL = [("facebook", "fb-1"), ("x", "tw-1"), ("twitter_id", "tw-2"),
            ("instagram_handle", "@Ann"), ("instagram_handle", "ann"),
            ("twitter_handle", "@Bob"), ("linkedin", "li-1"), ("crm_id", "c-1"),
            ("crm_id", "c-2"), ("Loyalty Card", "L-9"), ("crm_id", "NULL")]
# People's data the logs and error bodies must never show (tests/leak_scan.py): the
# emails (any address at a .test domain is found by pattern too), phones and handles.
PERSON_DATA = [*EMAILS, *PHONES, *(value for _, value in EXTERNAL)]
ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", None, "Not/AZone"]
ITEMS = ["sku-1", "sku-2", "sku-3", "sku-4"]
CATS = ["shoes", "books", "music"]
# As the collector writes them (top-level ``source``; ``socialChannel`` on social tracks).
SOURCES = [None, {"source": "web"}, {"source": "mobile"}, {"source": "smartwatch"},
           {"source": "social", "socialChannel": "instagram"},
           {"socialChannel": "twitter"}]
# Identifier types whose limit an episode breaches, and how an event carries one value.
LIMIT_TYPES = ("user_id", "email", "phone", "device_id", "anonymous_id", "facebook_id",
               "twitter_handle", "crm_id")
# The rules a drawn log must reach (checked by the coverage test).
RULES_REACHED = (
    *(f"type:{t}" for t in ("user_id", "email", "phone", "device_id", "anonymous_id",
                            "facebook_id", "twitter_id", "instagram_handle",
                            "twitter_handle", "linkedin_id", "crm_id", "loyalty_card")),
    *(f"limit:{t}" for t in LIMIT_TYPES),
    "merge", "merge_cap", "chain_3_or_more", "blocked", "no_identifier", "duplicate_same",
    "duplicate_different", "dead_letter", "out_of_order", "forget", "skipped_forgotten",
    "recent_trimmed",
)


def at(minute: int, second: int = 0) -> str:
    """A timestamp ``minute`` minutes after 2026-03-01T08:00Z (any non-negative minute)."""
    return f"2026-03-01T{8 + minute // 60:02d}:{minute % 60:02d}:{second:02d}Z"


@st.composite
def envelope(draw, n: int) -> dict:
    """One event envelope; ``n`` makes its message id unique within a log."""
    kind = draw(st.sampled_from(["track", "page", "screen", "identify", "alias", "group"]))
    doc: dict = {"type": kind, "messageId": f"m-{n:04d}"}
    anon = draw(st.sampled_from(ANON + [None]))
    user = draw(st.sampled_from(USERS + [None, None]))
    if anon is None and user is None:
        anon = draw(st.sampled_from(ANON))
    if anon is not None:
        doc["anonymousId"] = anon
    if user is not None:
        doc["userId"] = user
    # Few distinct times, so ties (broken by message id) are common.
    doc["timestamp"] = at(draw(st.integers(0, 20)))
    context: dict = {}
    if draw(st.booleans()):
        context["device"] = {"id": draw(st.sampled_from(DEVICES)),
                             "type": draw(st.sampled_from(["ios", "android", "watch"]))}
    zone = draw(st.sampled_from(ZONES))
    if zone:
        context["timezone"] = zone
    stamp = draw(st.sampled_from(SOURCES)) or {}
    if "socialChannel" in stamp and kind != "track":
        stamp = {}  # only track events are social interactions
    doc.update(stamp)
    if draw(st.integers(0, 4)) == 0:
        context["externalIds"] = [{"id": draw(st.sampled_from(["c-1", "c-2"])),
                                   "type": "crm_id", "collection": "users",
                                   "encoding": "none"}]
    if context:
        doc["context"] = context
    if kind == "identify":
        traits: dict = {}
        if draw(st.booleans()):
            traits["email"] = draw(st.sampled_from(EMAILS))
        traits["plan"] = draw(st.sampled_from(["free", "pro", "team"]))
        if draw(st.booleans()):
            traits["preferences"] = {"genre": draw(st.sampled_from(CATS))}
        if draw(st.booleans()):
            traits["consent"] = {"email": draw(st.booleans()), "sms": draw(st.booleans())}
        doc["traits"] = traits
    elif kind == "alias":
        doc["previousId"] = draw(st.sampled_from(ANON))
        doc.setdefault("userId", draw(st.sampled_from(USERS)))
    elif kind == "group":  # the account's traits; its email identifies no person
        doc["groupId"] = draw(st.sampled_from(["acme", "globex"]))
        doc["traits"] = {"plan": draw(st.sampled_from(["free", "pro"])),
                         "email": "billing@acme.test"}
    else:
        if kind == "track":
            doc["event"] = draw(st.sampled_from(["Product Viewed", "Product Added",
                                                 "Order Completed", "Post Liked"]))
        else:
            doc["name"] = "Home"
        props: dict = {}
        if draw(st.booleans()):
            props["product_id"] = draw(st.sampled_from(ITEMS))
            props["category"] = draw(st.sampled_from(CATS))
        doc["properties"] = props
    return doc


@st.composite
def event_logs(draw, min_size: int = 1, max_size: int = 30) -> list[dict]:
    """An event log: envelopes plus exact duplicates of some of them, shuffled."""
    size = draw(st.integers(min_size, max_size))
    events = [draw(envelope(i)) for i in range(size)]
    dup_idx = draw(st.lists(st.integers(0, size - 1), max_size=max(1, size // 4)))
    events += [dict(events[i]) for i in dup_idx]
    return draw(st.permutations(events))


# --- rich logs: every identifier type, episodes aimed at each rule ---------------------
def carrying(doc: dict, id_type: str, value: str) -> dict:
    """``doc`` with one more identifier of ``id_type`` (where an envelope carries it)."""
    context = doc.setdefault("context", {})
    if id_type == "user_id":
        doc["userId"] = value
    elif id_type == "anonymous_id":
        doc["anonymousId"] = value
    elif id_type in ("email", "phone"):
        context.setdefault("traits", {})[id_type] = value
    elif id_type == "device_id":
        context["device"] = {"id": value}
    else:
        context.setdefault("externalIds", []).append({"id": value, "type": id_type})
    return doc


def bare(message_id: str, minute: int, anchor: str = "null") -> dict:
    """A page view whose only person id is ``anchor`` (blocked by default: the event is
    then identified by what ``carrying`` adds)."""
    return {"type": "page", "name": "Home", "messageId": message_id,
            "anonymousId": anchor, "timestamp": at(minute)}


def limit_episode(tag: str, id_type: str, limit: int, minute: int) -> list[dict]:
    """limit + 1 events, each tying one more ``id_type`` value to one anchor."""
    anchor_type = "device_id" if id_type == "anonymous_id" else "anonymous_id"
    out = []
    for k in range(limit + 1):
        value = {"email": f"{tag}-{k}@example.test", "phone": f"+3361{k:03d}{len(tag):04d}",
                 "twitter_handle": f"@{tag}_{k}"}.get(id_type, f"{tag}-{k}")
        doc = carrying(bare(f"{tag}-{k}", minute + k), anchor_type, f"{tag}-anchor")
        out.append(carrying(doc, id_type, value))
    return out


def browse_episode(tag: str, items: int, minute: int) -> list[dict]:
    """One person viewing ``items`` distinct items: more than the recently viewed list
    keeps."""
    return [{**bare(f"{tag}-v{k}", minute + k, f"{tag}-reader"),
             "properties": {"product_id": f"{tag}-item-{k}", "category": "books"}}
            for k in range(items)]


def cap_episode(tag: str, cap: int, minute: int) -> list[dict]:
    """cap + 2 profiles (one custom type each, so no limit is met first) tied together
    by events carrying a hub id and up to 12 of theirs: the cap is reached."""
    leaves = [carrying(bare(f"{tag}-l{k}", minute), f"leaf{k}_id", tag)
              for k in range(cap + 2)]
    links = []
    for j, start in enumerate(range(0, cap + 2, 12)):
        doc = carrying(bare(f"{tag}-h{j}", minute + 1 + j), "hub_id", tag)
        for k in range(start, min(start + 12, cap + 2)):
            carrying(doc, f"leaf{k}_id", tag)
        links.append(doc)
    return leaves + links


def chain_episode(tag: str, length: int, minute: int) -> list[dict]:
    """``length`` profiles created apart, then tied pairwise in a chain."""
    nodes = [carrying(bare(f"{tag}-n{k}", minute), f"chain{k}_id", tag) for k in range(length)]
    links = [carrying(carrying(bare(f"{tag}-c{k}", minute + 1 + k), f"chain{k}_id", tag),
                      f"chain{k + 1}_id", tag) for k in range(length - 1)]
    return nodes + links


@st.composite
def enriched(draw, n: int) -> dict:
    """An ``envelope`` that may also carry a phone, social ids and handles, custom ids,
    a skewed time (years away, an offset, fractions of a second)."""
    doc = draw(envelope(n))
    doc["messageId"] = f"r-{n:04d}"
    if draw(st.integers(0, 3)) == 0:
        where = draw(st.sampled_from(["traits", "context"]))
        phone = draw(st.sampled_from(PHONES))
        if where == "traits":
            doc.setdefault("traits", {})["phone"] = phone
        else:
            doc.setdefault("context", {}).setdefault("traits", {})["phone"] = phone
    for id_type, value in draw(st.lists(st.sampled_from(EXTERNAL), max_size=3)):
        carrying(doc, id_type, value)
    skew = draw(st.integers(0, 9))
    if skew == 0:
        doc["timestamp"] = doc["timestamp"].replace("2026", draw(st.sampled_from(
            ["2019", "2031"])))
    elif skew == 1:
        doc["timestamp"] = doc["timestamp"].replace(":00Z", ":00.250+02:00")
    return doc


INVALID = ("no_message_id", "original_timestamp_only", "bad_type", "blank_person",
           "long_message_id", "bad_time")


def spoiled(doc: dict, how: str, n: int) -> dict:
    """A copy of ``doc`` the profile stage must dead-letter, in one of the ``INVALID``
    ways."""
    bad = {**doc, "messageId": f"bad-{n:04d}"}
    if how == "no_message_id":
        del bad["messageId"]
    elif how == "original_timestamp_only":
        bad["originalTimestamp"] = bad.pop("timestamp")
    elif how == "bad_type":
        bad["type"] = "bogus"
    elif how == "blank_person":
        bad.pop("userId", None)
        bad["anonymousId"] = "   "
        if bad["type"] == "alias":
            bad["type"] = "page"
    elif how == "long_message_id":
        bad["messageId"] = "x" * 257 + str(n)  # over the contract's 256
    else:
        bad["timestamp"] = "yesterday"
    return bad


def different_body(doc: dict) -> dict:
    """Another event under the same message id, type, topic and Kafka key."""
    other = {**doc, "timestamp": at(30), "properties": {"product_id": "sku-9"}}
    if other["type"] == "identify":
        other["traits"] = {"plan": "changed"}
    return other


@st.composite
def rich_logs(draw, rules: IdentityRules = TEST_RULES, min_size: int = 5,
              max_size: int = 40, forgets: bool = False, invalid: bool = True) -> list:
    """An event log that reaches the rules of ``rules``: random ``enriched`` envelopes,
    zero to three episodes (a limit breached for one type, the merge cap, a merge chain),
    duplicates with the same and a different body, invalid records; shuffled; with
    ``forgets``, ``Forget`` entries in the middle."""
    size = draw(st.integers(min_size, max_size))
    events = [draw(enriched(i)) for i in range(size)]
    for e, episode in enumerate(draw(st.lists(st.sampled_from(
            ["limit", "limit", "chain", "cap", "browse"]), min_size=1, max_size=3))):
        tag, minute = f"e{e}", draw(st.integers(0, 20))
        if episode == "limit":
            count = draw(st.integers(1, 4))
            for id_type in draw(st.permutations(LIMIT_TYPES))[:count]:
                events += limit_episode(f"{tag}{id_type[:2]}", id_type,
                                        rules.limit(id_type), minute)
        elif episode == "browse":
            events += browse_episode(tag, draw(st.integers(11, 13)), minute)
        elif episode == "chain":
            events += chain_episode(tag, draw(st.integers(3, 5)), minute)
        else:
            events += cap_episode(tag, rules.merge_cap, minute)
    picks = st.integers(0, len(events) - 1)
    copies = [dict(events[i]) for i in draw(st.lists(picks, max_size=max(1, size // 4)))]
    copies += [different_body(events[i]) for i in draw(st.lists(picks, max_size=2))]
    if invalid:
        copies += [spoiled(events[draw(picks)], draw(st.sampled_from(INVALID)), k)
                   for k in range(draw(st.integers(0, 3)))]
    log: list = draw(st.permutations(events + copies))
    if forgets:
        for _ in range(draw(st.integers(1, 2))):
            where = draw(st.integers(1, len(log) - 1))
            people = sorted({e["anonymousId"].strip() for e in log[:where] if isinstance(e, dict)
                             and isinstance(e.get("anonymousId"), str)})
            if people:  # each person alike, however many events they have
                log.insert(where, Forget(f"anonymous_id:{draw(st.sampled_from(people))}"))
    return log
