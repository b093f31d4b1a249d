"""Hypothesis strategies for event logs that stress identity resolution.

Identifiers come from small pools so that events share them directly and through
chains; blocked values, limit breaches (several user ids meeting one anonymous id),
merge-cap breaches, duplicates (the same message twice) and timestamp ties (message id
breaks them) all occur often.
"""

from __future__ import annotations

from hypothesis import strategies as st

from streams.identity.models import IdentityRules

# Tight rules so that small logs reach every limit.
TEST_RULES = IdentityRules(limits={"user_id": 1, "email": 2}, default_limit=3, merge_cap=3)

ANON = [f"anon-{i}" for i in range(6)] + ["null", "0000"]
USERS = [f"user-{i}" for i in range(4)] + ["undefined"]
EMAILS = ["ann@example.test", "Ann@Example.test ", "bob@example.test", "cy@example.test"]
DEVICES = ["dev-a", "dev-b", "dev-c", "00000000-0000-0000-0000-000000000000"]
ZONES = ["Europe/Paris", "America/New_York", "Asia/Kolkata", None, "Not/AZone"]
ITEMS = ["sku-1", "sku-2", "sku-3", "sku-4"]
CATS = ["shoes", "books", "music"]
# As the collector writes them (top-level ``source``; ``socialChannel`` on social tracks).
SOURCES = [None, {"source": "web"}, {"source": "mobile"}, {"source": "smartwatch"},
           {"source": "social", "socialChannel": "instagram"},
           {"socialChannel": "twitter"}]


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
    minute = draw(st.integers(0, 20))
    doc["timestamp"] = f"2026-03-01T{8 + minute // 60:02d}:{minute % 60:02d}:00Z"
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
