"""The person page's JSON routes against PostgreSQL: a person with 3,000 events is paged
off the index (each page a bounded index read, no sort of their events), every event once
and in order; tokens: 401 without one, 403 when a read token tries to forget."""

from __future__ import annotations

from aiohttp.test_utils import TestClient, TestServer
from sqlalchemy import text

from streams.db import async_engine
from streams.people.logic import decode_cursor
from streams.people.store import PeopleStore
from streams.profiles.models import FoldEvent, profile_id_for
from streams.profiles.store import ProfileStore
from streams.server import create_web_app
from tests.helpers import API_FORGET_TOKEN, API_READ_TOKEN
from tests.profiles_helpers import drop_profiles_schema, with_profiles_schema

PERSON_EVENTS = 3_000
READ, FORGET = API_READ_TOKEN, API_FORGET_TOKEN  # the session's tokens (tests/helpers.py)


def event(n: int, *ids: str, source: str = "web") -> FoldEvent:
    minute, second = divmod(n, 60)
    hour, minute = divmod(minute, 60)
    return FoldEvent(message_id=f"e{n:05d}-{ids[0]}", type="track", identifiers=ids,
                     time=f"2026-03-0{1 + hour // 24}T{hour % 24:02d}:{minute:02d}:"
                          f"{second:02d}.000000Z", source=source, event="Product Viewed",
                     item=f"sku-{n % 7}")


def plan_nodes(plan: dict):
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)


async def test_timeline_of_3000_events_is_paged_off_the_index(make_settings, monkeypatch):
    settings = await with_profiles_schema(make_settings())
    engine = async_engine(settings, pool_size=2, max_overflow=0)
    # As `streams serve` runs it: without an access log (it would hold ?token= values).
    server = TestServer(create_web_app(settings))
    client = TestClient(server)
    try:
        store = ProfileStore(engine, schema=settings.profiles_schema)
        sources = ("web", "mobile", "smartwatch")
        mine = [event(n, "user_id:big", "anonymous_id:big-anon", source=sources[n % 3])
                for n in range(PERSON_EVENTS)]
        others = [event(n, f"user_id:other-{n % 300}") for n in range(PERSON_EVENTS)]
        batch = mine + others
        for start in range(0, len(batch), 1_000):
            await store.write_batch(batch[start:start + 1_000])
        async with engine.begin() as conn:
            await conn.execute(text(f'ANALYZE "{settings.profiles_schema}".profile_events'))
        pid = profile_id_for(mine[0].message_id)
        await server.start_server(access_log=None)
        await client.start_server()
        read = {"Authorization": f"Bearer {READ}"}

        # No token, a wrong one, and a read token trying to forget.
        assert (await client.get(f"/people/{pid}.json")).status == 401
        resp = await client.get(f"/people/{pid}.json", headers={"Authorization": "Bearer nope"})
        assert resp.status == 401 and "nope" not in await resp.text()
        assert (await client.get("/people/search", params={"q": "user_id:big"})).status == 401
        assert (await client.get(f"/people/{pid}/timeline.json")).status == 401
        assert (await client.delete(f"/people/{pid}", headers=read)).status == 403
        assert (await client.delete(f"/people/{pid}")).status == 401
        # The page answers 401 without a read token (its body, which holds no data, asks
        # for one), and 200 with it, in the header or as ?token= (then moved to the tab).
        shell = await client.get("/people")
        assert shell.status == 401 and "big" not in await shell.text()
        assert shell.headers["WWW-Authenticate"].startswith("Bearer")
        assert 'id="token-panel"' in await shell.text()
        assert (await client.get("/people", headers={"Authorization": "Bearer nope"})).status == 401
        assert (await client.get("/people", headers=read)).status == 200
        assert (await client.get("/people", params={"token": READ})).status == 200

        resp = await client.get("/people/search", params={"q": "anonymous_id:big-anon"},
                                headers=read)
        assert (await resp.json()) == {"id": pid, "matched": "anonymous_id:big-anon",
                                       "followed_from": None}
        resp = await client.get(f"/people/{pid}.json", params={"limit": "100"}, headers=read)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        assert page["did"]["counts"]["total"] == PERSON_EVENTS
        assert page["identity"]["complete"] is True
        assert {i["key"] for g in page["identity"]["groups"] for i in g["identifiers"]} == {
            "user_id:big", "anonymous_id:big-anon"}

        # Walk every page: each event once, newest first.
        seen = [e["message_id"] for e in page["timeline"]["events"]]
        cursor = page["timeline"]["next"]
        while cursor:
            resp = await client.get(f"/people/{pid}/timeline.json",
                                    params={"before": cursor, "limit": "200"}, headers=read)
            assert resp.status == 200, await resp.text()
            body = await resp.json()
            assert len(body["events"]) <= 200
            seen += [e["message_id"] for e in body["events"]]
            cursor = body["next"]
        expected = [e.message_id for e in sorted(mine, key=lambda e: e.key, reverse=True)]
        assert seen == expected

        # A page deep in the timeline is an index range read of one page, no sort.
        middle = decode_cursor((await (await client.get(
            f"/people/{pid}.json", params={"limit": "200"}, headers=read)).json())
            ["timeline"]["next"])
        plan = await PeopleStore(engine, settings.profiles_schema).explain_page(pid, middle, 51)
        nodes = list(plan_nodes(plan))
        assert not [n for n in nodes if n["Node Type"] == "Sort"], plan
        scans = [n for n in nodes if n.get("Index Name") == "profile_events_profile"]
        assert scans and all(n["Actual Rows"] <= 51 for n in scans), plan

        # Bad input is named.
        resp = await client.get(f"/people/{pid}/timeline.json", params={"before": "zz"},
                                headers=read)
        assert resp.status == 400 and (await resp.json())["field"] == "before"
        resp = await client.get(f"/people/{pid}.json", params={"limit": "5000"}, headers=read)
        assert resp.status == 400 and (await resp.json())["field"] == "limit"
        resp = await client.get("/people/search", params={"q": "user_id:nobody"}, headers=read)
        assert resp.status == 404

        # The forget token forgets; the person is gone.
        resp = await client.delete(f"/people/{pid}", headers={"Authorization": f"Bearer {FORGET}"})
        assert resp.status == 200 and (await resp.json())["forgotten"]["events"] == PERSON_EVENTS
        assert (await client.get(f"/people/{pid}.json", headers=read)).status == 404
    finally:
        await client.close()
        await engine.dispose()
        await drop_profiles_schema(settings)
