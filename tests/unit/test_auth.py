"""``streams.auth``: tokens and scopes, constant-time matching, the rate per token or per
address, and what ``streams serve`` refuses to expose."""

from __future__ import annotations

import hmac

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from streams import auth
from streams.auth import (
    API_CALLER,
    Access,
    AccessConfigError,
    check_exposure,
    install_access,
    require,
)
from streams.settings import load_settings

TOKENS = "rd_0123456789=read,fg_0123456789=forget"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _client(clock: Clock | None = None, **overrides) -> TestClient:
    settings = load_settings(api_tokens=TOKENS, **overrides)
    app = web.Application()
    access = install_access(app, settings)
    assert install_access(app, settings) is access  # once per app
    if clock is not None:
        access.monotonic = clock

    @require("read")
    async def read(request: web.Request) -> web.Response:
        caller = request[API_CALLER]
        return web.json_response({"name": caller.name, "scope": caller.scope})

    @require("forget")
    async def forget(_request: web.Request) -> web.Response:
        return web.json_response({"forgotten": True})

    @require("read", query_token=True)
    async def page(_request: web.Request) -> web.Response:
        return web.Response(text="page")

    app.router.add_get("/r", read)
    app.router.add_delete("/r", forget)
    app.router.add_get("/page", page)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_tokens_and_scopes():
    client = await _client()
    try:
        resp = await client.get("/r")
        body = await resp.json()
        assert resp.status == 401 and body["field"] == "Authorization"
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="streams"'
        resp = await client.get("/r", headers=bearer("rd_guess"))
        assert resp.status == 401
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="streams", error="invalid_token"'
        assert "rd_guess" not in await resp.text()
        resp = await client.get("/r", headers={"Authorization": "Basic cmRfMDEyMzQ1Njc4OTo="})
        assert resp.status == 401  # a write key's scheme never opens the API
        resp = await client.get("/r", headers=bearer("rd_0123456789"))
        assert resp.status == 200 and await resp.json() == {"name": "#1", "scope": "read"}
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        resp = await client.delete("/r", headers=bearer("rd_0123456789"))
        assert resp.status == 403 and (await resp.json())["field"] == "scope"
        assert 'error="insufficient_scope", scope="forget"' in resp.headers["WWW-Authenticate"]
        resp = await client.delete("/r", headers=bearer("fg_0123456789"))
        assert resp.status == 200
        resp = await client.get("/r", headers=bearer("fg_0123456789"))  # forget implies read
        assert resp.status == 200 and (await resp.json())["scope"] == "forget"
        # ?token= only where the route allows it (pages).
        assert (await client.get("/r", params={"token": "rd_0123456789"})).status == 401
        assert (await client.get("/page", params={"token": "rd_0123456789"})).status == 200
        assert (await client.get("/page", params={"token": "nope"})).status == 401
    finally:
        await client.close()


async def test_no_tokens_configured_opens_nothing():
    settings = load_settings(api_tokens="")
    app = web.Application()
    install_access(app, settings)

    @require("read")
    async def read(_request: web.Request) -> web.Response:
        return web.Response(text="data")

    app.router.add_get("/r", read)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        assert (await client.get("/r")).status == 401
        assert (await client.get("/r", headers=bearer(""))).status == 401
    finally:
        await client.close()


async def test_rate_per_token_and_per_address_without_one():
    clock = Clock()
    client = await _client(clock, api_rate=1.0, api_burst=2)
    try:
        for _ in range(2):
            assert (await client.get("/r", headers=bearer("rd_0123456789"))).status == 200
        resp = await client.get("/r", headers=bearer("rd_0123456789"))
        assert resp.status == 429 and resp.headers["Retry-After"] == "1"
        assert (await resp.json())["field"] == "rate"
        # Another token has its own bucket.
        assert (await client.get("/r", headers=bearer("fg_0123456789"))).status == 200
        # Guessing is limited per address: unknown tokens soon get 429, not 401.
        statuses = [(await client.get("/r", headers=bearer(f"guess{i}"))).status
                    for i in range(3)]
        assert statuses == [401, 401, 429]
        clock.now += 1.0
        assert (await client.get("/r", headers=bearer("rd_0123456789"))).status == 200
    finally:
        await client.close()


def test_every_token_is_compared_even_after_a_match(monkeypatch):
    settings = load_settings(api_tokens=TOKENS + ",x_0123456789=read")
    access = Access.for_settings(settings)
    calls = []
    real = hmac.compare_digest

    def counting(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", counting)
    assert access.identify("rd_0123456789").name == "#1"
    assert len(calls) == 3 and set(calls) == {(32, 32)}  # all of them, equal lengths
    calls.clear()
    assert access.identify("a-much-longer-guess-than-any-token-there-is") is None
    assert len(calls) == 3


async def test_require_without_install_is_a_server_error_not_an_open_door():
    app = web.Application()

    @require("read")
    async def read(_request: web.Request) -> web.Response:
        return web.Response(text="data")

    app.router.add_get("/r", read)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        resp = await client.get("/r", headers=bearer("anything"))
        assert resp.status == 500 and "data" not in await resp.text()
    finally:
        await client.close()
    with pytest.raises(ValueError):
        require("admin")


@pytest.mark.parametrize(
    "overrides, fragment",
    [
        ({}, "built-in demo keys"),
        ({"write_keys": "own_key_1=web,wk_app=mobile"}, "built-in demo keys"),
        ({"write_keys": "own_key_1=web"}, "set STREAMS_API_TOKENS"),
        ({"write_keys": "own_key_1=web", "api_tokens": TOKENS}, "set STREAMS_FORGET_KEY"),
    ],
)
def test_serve_beyond_loopback_refuses_public_keys_and_missing_credentials(overrides, fragment):
    settings = load_settings(http_host="0.0.0.0", **overrides)
    with pytest.raises(AccessConfigError, match=fragment):
        check_exposure(settings)


def test_serve_beyond_loopback_with_own_credentials_and_on_loopback_is_allowed():
    check_exposure(load_settings(http_host="0.0.0.0", write_keys="own_key_1=web",
                                 api_tokens=TOKENS, forget_key=SecretStr("k" * 32)))
    check_exposure(load_settings(http_host="127.0.0.1"))  # the demo keys on a laptop
    check_exposure(load_settings(http_host="localhost"))


async def test_authorize_inside_a_handler_raises_the_same_answers():
    settings = load_settings(api_tokens=TOKENS)
    app = web.Application()
    install_access(app, settings)

    async def mixed(request: web.Request) -> web.Response:
        # The scope depends on the call: forget for DELETE, read otherwise.
        caller = auth.authorize(request, "forget" if request.method == "DELETE" else "read",
                                query_token=True)
        return web.json_response({"name": caller.name})

    app.router.add_route("*", "/m", mixed)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        resp = await client.get("/m")
        assert resp.status == 401 and (await resp.json())["field"] == "Authorization"
        assert resp.headers["WWW-Authenticate"] == 'Bearer realm="streams"'
        assert (await client.get("/m", params={"token": "rd_0123456789"})).status == 200
        resp = await client.delete("/m", headers=bearer("rd_0123456789"))
        assert resp.status == 403 and resp.content_type == "application/json"
        assert (await client.delete("/m", headers=bearer("fg_0123456789"))).status == 200
    finally:
        await client.close()


def test_request_rate_refills_and_holds_a_bounded_number_of_buckets():
    rate = auth.RequestRate(rate=2.0, burst=2, max_keys=3)
    assert [rate.take("a", 0.0) for _ in range(3)] == [0.0, 0.0, 0.5]
    assert rate.take("a", 0.5) == 0.0  # one refilled in half a second at 2/s
    for i in range(10):
        rate.take(f"addr{i}", 1.0)
    assert len(rate) == 3
    assert auth.RequestRate(rate=0, burst=1).take("x", 0.0) == 0.0  # off
