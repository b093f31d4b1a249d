"""Simulated people for ``streams demo``: realistic omnichannel traffic as Segment events.

Each person starts as an anonymous web visitor, may sign in (identify, linking the
browser's anonymousId to a userId), install the phone app, pair a smartwatch, interact
with the brand on social channels and state preferences and consent. Everything here is
deterministic given the ``random.Random`` and the times passed in (no I/O, no clock).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from streams.events.time import format_time

FIRST_NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Margaret", "Ken",
               "Frances", "Dennis", "Radia", "Linus", "Hedy", "Tim", "Katherine", "John")
PRODUCTS = ("trail-shoe", "rain-jacket", "running-watch", "yoga-mat", "water-bottle",
            "backpack", "headlamp", "socks-3pack", "cycling-gloves", "thermal-top")
CATEGORIES = ("running", "hiking", "cycling", "yoga", "outdoor")
WEB_PAGES = ("Home", "Category", "Product", "Search", "Cart", "Blog Post")
APP_SCREENS = ("Home", "Product Detail", "Cart", "Orders", "Activity Feed")
WATCH_SCREENS = ("Workout Summary", "Heart Rate", "Daily Goal", "Notification")
SOCIAL_EVENTS = (("Post Liked", 5), ("Post Shared", 2), ("Comment Posted", 2),
                 ("Account Followed", 1), ("Brand Mentioned", 1), ("Direct Message Sent", 1))
CHANNELS = ("facebook", "instagram", "twitter", "linkedin")
MESSAGE_CHANNELS = ("email", "push", "sms", "watch")


@dataclass
class Person:
    """One simulated person and how far along their journey they are."""

    index: int
    web_anonymous_id: str
    app_anonymous_id: str
    watch_device_id: str
    name: str
    email: str
    user_id: str | None = None
    has_app: bool = False
    has_watch: bool = False
    social: dict[str, str] = field(default_factory=dict)
    os: str = "iOS"
    timezone: str = "Europe/Berlin"
    clock_skew: float = 0.0  # seconds the person's devices' clocks are off

    @property
    def signed_in(self) -> bool:
        return self.user_id is not None


@dataclass(frozen=True)
class SimEvent:
    """An event for the collector, with the source whose write key must send it."""

    source: str
    event: dict


def make_people(count: int, rng: random.Random, run: str) -> list[Person]:
    """``count`` new people; ``run`` keeps ids of different demo runs apart."""
    people = []
    for i in range(count):
        name = rng.choice(FIRST_NAMES)
        tag = f"{run}{i:05d}"
        person = Person(
            index=i, web_anonymous_id=f"web-{tag}", app_anonymous_id=f"app-{tag}",
            watch_device_id=f"watch-{tag}", name=name, email=f"{name.lower()}.{tag}@example.test",
            os=rng.choice(("iOS", "Android")),
            timezone=rng.choice(("Europe/Berlin", "America/New_York", "Asia/Tokyo",
                                 "Europe/London", "America/Sao_Paulo")),
            clock_skew=rng.choice((0.0, 0.0, 0.0, rng.uniform(-120, 120))),
        )
        person.social = {ch: f"{name.lower()}_{tag}" for ch in CHANNELS if rng.random() < 0.5}
        people.append(person)
    return people


def _ids(person: Person, anonymous_id: str) -> dict:
    ids = {"anonymousId": anonymous_id}
    if person.user_id:
        ids["userId"] = person.user_id
    return ids


def _times(person: Person, now: datetime) -> dict:
    device_now = now + timedelta(seconds=person.clock_skew)
    return {"timestamp": format_time(device_now), "sentAt": format_time(device_now)}


def _web_context(person: Person, path: str) -> dict:
    return {"library": {"name": "analytics.js", "version": "5.2.0"},
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0", "locale": "en-US",
            "timezone": person.timezone, "ip": "203.0.113.10",
            "page": {"path": path, "url": f"https://shop.example{path}"}}


def _app_context(person: Person) -> dict:
    return {"library": {"name": "analytics-ios" if person.os == "iOS" else "analytics-android",
                        "version": "4.1.0"},
            "app": {"name": "Shop", "version": "7.3.0", "build": "731"},
            "device": {"type": person.os.lower(), "id": person.app_anonymous_id},
            "os": {"name": person.os, "version": "18.1" if person.os == "iOS" else "15"},
            "timezone": person.timezone, "locale": "en-US"}


def _watch_context(person: Person) -> dict:
    return {"library": {"name": "analytics-swift", "version": "1.6.0"},
            "app": {"name": "Shop Watch", "version": "2.0.1"},
            "device": {"type": "watch", "id": person.watch_device_id},
            "os": {"name": "watchOS" if person.os == "iOS" else "Wear OS", "version": "11"},
            "timezone": person.timezone}


def next_events(person: Person, rng: random.Random, now: datetime) -> list[SimEvent]:
    """The person's next few events (a short burst of activity) at ``now``."""
    times = _times(person, now)
    roll = rng.random()
    product = rng.choice(PRODUCTS)
    # 1. Anonymous or signed-in web browsing, the most common activity.
    if not person.signed_in or roll < 0.35:
        page = rng.choice(WEB_PAGES)
        path = f"/products/{product}" if page == "Product" else f"/{page.lower().replace(' ', '-')}"
        events = [SimEvent("web", {
            "type": "page", "name": page, **_ids(person, person.web_anonymous_id),
            "properties": {"path": path, "category": rng.choice(CATEGORIES)},
            "context": _web_context(person, path), **times})]
        if rng.random() < 0.6:
            events.append(SimEvent("web", {
                "type": "track", "event": rng.choice(("Product Clicked", "Product Added",
                                                      "Search Submitted", "Banner Clicked")),
                **_ids(person, person.web_anonymous_id),
                "properties": {"product_id": product, "price": round(rng.uniform(9, 199), 2)},
                "context": _web_context(person, path), **times}))
        if not person.signed_in and rng.random() < 0.25:
            person.user_id = f"user-{person.web_anonymous_id[4:]}"
            events.append(SimEvent("web", {
                "type": "identify", **_ids(person, person.web_anonymous_id),
                "traits": {"email": person.email, "firstName": person.name,
                           "signedUpAt": format_time(now)},
                "context": _web_context(person, "/sign-in"), **times}))
        return events
    # 2. Preferences and consent, stated now and then.
    if roll < 0.42:
        consent = {ch: rng.random() < 0.7 for ch in MESSAGE_CHANNELS}
        return [SimEvent("web", {
            "type": "identify", **_ids(person, person.web_anonymous_id),
            "traits": {"preferences": {"categories": rng.sample(CATEGORIES, 2),
                                       "preferredChannel": rng.choice(MESSAGE_CHANNELS)},
                       "consent": consent,
                       "quietHours": {"start": "22:00", "end": "07:00",
                                      "timezone": person.timezone}},
            "context": _web_context(person, "/account/preferences"), **times})]
    # 3. The phone app (installed on first use: an identify links the app's id).
    if roll < 0.72:
        events = []
        if not person.has_app:
            person.has_app = True
            events.append(SimEvent("mobile", {
                "type": "identify", **_ids(person, person.app_anonymous_id),
                "traits": {"email": person.email}, "context": _app_context(person), **times}))
        events.append(SimEvent("mobile", {
            "type": "screen", "name": rng.choice(APP_SCREENS),
            **_ids(person, person.app_anonymous_id),
            "properties": {"product_id": product}, "context": _app_context(person), **times}))
        if rng.random() < 0.5:
            events.append(SimEvent("mobile", {
                "type": "track", "event": rng.choice(("Product Viewed", "Order Completed",
                                                      "Push Opened", "Wishlist Added")),
                **_ids(person, person.app_anonymous_id),
                "properties": {"product_id": product, "revenue": round(rng.uniform(9, 199), 2)},
                "context": _app_context(person), **times}))
        return events
    # 4. The smartwatch, for people with the app.
    if roll < 0.85 and person.has_app:
        events = []
        if not person.has_watch:
            person.has_watch = True
            events.append(SimEvent("smartwatch", {
                "type": "identify", "userId": person.user_id,
                "anonymousId": person.watch_device_id, "traits": {},
                "context": _watch_context(person), **times}))
        events.append(SimEvent("smartwatch", {
            "type": "screen", "name": rng.choice(WATCH_SCREENS), "userId": person.user_id,
            "anonymousId": person.watch_device_id, "context": _watch_context(person), **times}))
        if rng.random() < 0.4:
            events.append(SimEvent("smartwatch", {
                "type": "track", "event": rng.choice(("Workout Completed", "Notification Opened",
                                                      "Goal Reached")),
                "userId": person.user_id, "anonymousId": person.watch_device_id,
                "properties": {"minutes": rng.randint(5, 90)},
                "context": _watch_context(person), **times}))
        return events
    # 5. Social channels: interactions arrive from each network's integration, keyed by
    #    the handle; a signed-in person sometimes links a handle (externalIds).
    if not person.social:
        return next_events_web_only(person, rng, now)
    channel = rng.choice(sorted(person.social))
    handle = person.social[channel]
    names, weights = zip(*SOCIAL_EVENTS, strict=True)
    event_name = rng.choices(names, weights)[0]
    external = [{"id": handle, "type": f"{channel}_handle", "collection": "users",
                 "encoding": "none"}]
    events = [SimEvent(channel, {
        "type": "track", "event": event_name, "anonymousId": f"{channel}:{handle}",
        "properties": {"post_id": f"post-{rng.randint(1, 40)}", "product_id": product},
        "context": {"library": {"name": f"{channel}-connector", "version": "1.0"},
                    "externalIds": external}, **times})]
    if rng.random() < 0.2:
        events.append(SimEvent("web", {
            "type": "identify", **_ids(person, person.web_anonymous_id),
            "traits": {channel: handle},
            "context": {**_web_context(person, "/account/social"), "externalIds": external},
            **times}))
    return events


def next_events_web_only(person: Person, rng: random.Random, now: datetime) -> list[SimEvent]:
    """A single web page view (for people without social accounts)."""
    path = f"/products/{rng.choice(PRODUCTS)}"
    return [SimEvent("web", {"type": "page", "name": "Product",
                             **_ids(person, person.web_anonymous_id),
                             "properties": {"path": path},
                             "context": _web_context(person, path), **_times(person, now)})]


def broken_event(rng: random.Random, now: datetime) -> SimEvent:
    """An invalid event of the kinds real producers send by mistake."""
    choice = rng.randrange(3)
    if choice == 0:
        return SimEvent("web", {"type": "track", "event": "Clicked", "timestamp": format_time(now)})
    if choice == 1:
        return SimEvent("web", {"type": "group", "userId": "x"})  # a group without groupId
    return SimEvent("web", {"type": "page", "anonymousId": "a", "timestamp": "yesterday"})
