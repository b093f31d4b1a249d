"""Helpers of the ingestion integration tests: reading topics back, an HTTP client."""

from __future__ import annotations

import base64
import gzip as gzip_module
import socket

import orjson
from aiohttp import ClientSession

from streams.events.dlq import read_dead_letter
from streams.kafka import ConsumedRecord, read_topic
from streams.reference import expected_state
from streams.settings import Settings


def basic(key: str) -> str:
    """The Authorization header of a write key."""
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def read_all(settings: Settings, base_topic: str) -> list[ConsumedRecord]:
    """Every record of a (base-named) topic, from the beginning to its current end."""
    return [r async for r in read_topic(settings, settings.topic(base_topic), idle_seconds=1.0)]


async def read_events(settings: Settings) -> dict[str, list[dict]]:
    """The JSON values of the four event topics, by kind."""
    out = {}
    for kind in ("click", "view", "social", "identify"):
        records = await read_all(settings, getattr(settings, f"topic_{kind}"))
        out[kind] = [orjson.loads(r.value) | {"_key": r.key.decode() if r.key else None}
                     for r in records]
    return out


async def read_dlq(settings: Settings):
    """The dead letters, decoded, with their raw headers."""
    return [(read_dead_letter(r.partition, r.offset, r.key, r.value, r.headers), dict(r.headers))
            for r in await read_all(settings, settings.topic_dlq)]


class Client:
    """A small HTTP client for the collector."""

    def __init__(self, session: ClientSession, url: str):
        self.session, self.url = session, url

    async def post(self, path: str, body, key: str | None = "wk_web", *, gzip: bool = False,
                   headers: dict | None = None):
        data = body if isinstance(body, bytes) else orjson.dumps(body)
        hdrs = {"Content-Type": "application/json", **(headers or {})}
        if key is not None:
            hdrs["Authorization"] = basic(key)
        if gzip:
            data = gzip_module.compress(data)
            hdrs["Content-Encoding"] = "gzip"
        async with self.session.post(self.url + path, data=data, headers=hdrs) as resp:
            return resp.status, await resp.json(), resp.headers


def one_profile(events: dict[str, list[dict]], anonymous_id: str, user_id: str) -> dict:
    """The one profile (reference fold of ``events``) holding the user id, required to
    hold the anonymous id too."""
    records = [e for docs in events.values() for e in docs]
    profiles = [p for p in expected_state(records).profiles.values()
                if f"user_id:{user_id}" in p["identifiers"]]
    assert len(profiles) == 1, profiles
    profile = profiles[0]
    assert f"anonymous_id:{anonymous_id}" in profile["identifiers"]
    return profile
