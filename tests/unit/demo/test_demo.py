"""The demo storefront without services: the SDK fetch (npm stood in by a fake that
writes a tarball), its pin against the lock file, and the page's routes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.demo import sdk
from streams.demo.views import page_config, register, web_write_key
from streams.settings import load_settings
from tests.helpers import REPO


def tarball(version: str = sdk.VERSION, with_bundle: bool = True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as archive:
        files = {"package/package.json": json.dumps({"name": sdk.PACKAGE, "version": version})}
        if with_bundle:
            files["package/dist/umd/index.js"] = "window.AnalyticsNext = {};"
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def fake_npm(payload: bytes, calls: list):
    def run(argv, **_kwargs):
        calls.append(argv)
        dest = Path(argv[argv.index("--pack-destination") + 1])
        (dest / "segment-analytics-next.tgz").write_bytes(payload)
        out = json.dumps([{"filename": "segment-analytics-next.tgz"}])
        return subprocess.CompletedProcess(argv, 0, out, "")
    return run


def test_sdk_pin_is_the_lock_files():
    lock = orjson.loads((REPO / "js" / "package-lock.json").read_bytes())
    pinned = lock["packages"]["node_modules/@segment/analytics-next"]
    assert (pinned["version"], pinned["integrity"]) == (sdk.VERSION, sdk.INTEGRITY)


def test_ensure_sdk_fetches_once_and_checks_the_integrity(tmp_path, monkeypatch):
    payload = tarball()
    calls: list = []
    monkeypatch.setattr(sdk, "INTEGRITY", "sha512-" + base64.b64encode(
        hashlib.sha512(payload).digest()).decode())
    folder = sdk.ensure_sdk(tmp_path, run=fake_npm(payload, calls))
    assert (folder / "index.js").read_text() == "window.AnalyticsNext = {};"
    assert calls[0][:3] == ["npm", "pack", f"{sdk.PACKAGE}@{sdk.VERSION}"]
    assert sdk.ensure_sdk(tmp_path, run=fake_npm(payload, calls)) == folder
    assert len(calls) == 1  # cached
    assert [p.name for p in (tmp_path / "npm").iterdir()] == [f"analytics-next-{sdk.VERSION}"]


def test_ensure_sdk_refuses_a_tarball_that_is_not_the_pinned_one(tmp_path):
    with pytest.raises(sdk.SdkFetchError, match="integrity"):
        sdk.ensure_sdk(tmp_path, run=fake_npm(tarball(), []))
    assert sdk.bundle_dir(tmp_path) is None

    def failing(argv, **_kwargs):
        return subprocess.CompletedProcess(argv, 1, "", "npm error code E404\nnot found")
    with pytest.raises(sdk.SdkFetchError, match="not found"):
        sdk.ensure_sdk(tmp_path, run=failing)


async def test_demo_routes_without_the_sdk(tmp_path):
    settings = load_settings(cache_dir=tmp_path, write_keys="wk_app=mobile,wk_shop=web")
    assert web_write_key(settings) == "wk_shop"
    assert page_config(settings) == {"writeKey": "wk_shop", "sdkVersion": sdk.VERSION,
                                     "sdkReady": False}
    app = web.Application()
    register(app, settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        page = await client.get("/demo")
        html = await page.text()
        assert page.status == 200 and '"writeKey":"wk_shop"' in html
        assert (await client.get("/demo/sdk/index.js")).status == 404
        assert (await client.get("/demo/static/demo.js")).status == 200
        assert (await client.get("/demo/static/..%2Fviews.py")).status == 404
        missing = await client.get("/demo/visitor.json")
        assert missing.status == 400 and (await missing.json())["field"] == "anonymousId"
    finally:
        await client.close()


async def test_visitor_view_is_loopback_only(tmp_path):
    settings = load_settings(cache_dir=tmp_path, http_host="0.0.0.0")
    app = web.Application()
    register(app, settings)
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        refused = await client.get("/demo/visitor.json?anonymousId=a-1")
        assert refused.status == 403 and (await refused.json())["field"] == "host"
    finally:
        await client.close()
