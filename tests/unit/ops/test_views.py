"""The /ops routes: token protection, binding rules, JSON and Prometheus output."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from pydantic import SecretStr

from streams.ops.sampler import LagSampler
from streams.ops.views import OpsConfigError, check_binding, is_loopback, register
from streams.settings import load_settings
from tests.promtool import promtool_findings
from tests.unit.ops.fakes import ScriptedCluster, figures

TOKEN = "s3cret-ops-token"


@pytest.fixture
async def client_for():
    clients: list[TestClient] = []

    async def make(token: str | None = None, samples: int = 3) -> tuple[TestClient, LagSampler]:
        cluster = ScriptedCluster()
        sampler = LagSampler(cluster.observe, interval=1.0, window=3.0, history=10.0,
                             dlq_topic="events.dlq", figures=figures, clock=cluster.now)
        for _ in range(samples):
            await sampler.sample_once()
        settings = load_settings(ops_token=SecretStr(token) if token else None)
        app = web.Application()
        register(app, settings, sampler=sampler)
        # The app's own loop would keep sampling the fake; the test drives it by hand.
        sampler.start = lambda: None  # type: ignore[method-assign]
        client = TestClient(TestServer(app))
        await client.start_server()
        clients.append(client)
        return client, sampler

    yield make
    for client in clients:
        await client.close()


@pytest.mark.parametrize("host,loopback", [
    ("127.0.0.1", True), ("127.8.9.10", True), ("::1", True), ("[::1]", True),
    ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
    ("example.com", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_non_loopback_binding_needs_a_token():
    with pytest.raises(OpsConfigError, match="STREAMS_HTTP_HOST=0.0.0.0 is not a loopback"):
        check_binding(load_settings(http_host="0.0.0.0"))
    check_binding(load_settings(http_host="0.0.0.0", ops_token=SecretStr(TOKEN)))
    check_binding(load_settings(http_host="127.0.0.1"))
    with pytest.raises(OpsConfigError, match="set but empty"):
        check_binding(load_settings(ops_token=SecretStr("  ")))
    app = web.Application()
    with pytest.raises(OpsConfigError):
        register(app, load_settings(http_host="0.0.0.0"))


async def test_without_token_everything_is_open_and_read_only(client_for):
    client, _ = await client_for()
    page = await client.get("/ops")
    assert page.status == 200
    html = await page.text()
    assert '<script src="/ops/static/plotly.min.js">' in html and 'id="chart-lag"' in html
    assert (await client.get("/ops/lag.json")).status == 200
    assert (await client.get("/metrics")).status == 200
    for path in ("/ops", "/ops/lag.json", "/metrics"):
        assert (await client.post(path)).status == 405
        assert (await client.delete(path)).status == 405


async def test_token_protects_page_json_and_metrics(client_for):
    client, _ = await client_for(token=TOKEN)
    for path in ("/ops", "/ops/lag.json", "/metrics"):
        denied = await client.get(path)
        assert denied.status == 401, path
        body = await denied.json()
        assert body["error"] == "unauthorized" and TOKEN not in str(body)
        assert denied.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await client.get(path, headers={"Authorization": "Bearer nope"})
        assert wrong.status == 401
        assert (await client.get(path, params={"token": "nope"})).status == 401
        ok = await client.get(path, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200, path
        assert ok.headers["Cache-Control"] == "no-store"
        assert (await client.get(path, params={"token": TOKEN})).status == 200
    # The static files are library code and the page's own script: no data, no token.
    js = await client.get("/ops/static/dashboard.js")
    assert js.status == 200 and "lag.json" in await js.text()
    assert (await client.get("/ops/static/../views.py")).status == 404
    assert (await client.get("/ops/static/secrets.txt")).status == 404


async def test_plotly_is_served_from_the_installed_package(client_for):
    client, _ = await client_for()
    plain = await client.get("/ops/static/plotly.min.js", headers={"Accept-Encoding": "identity"})
    assert plain.status == 200
    text = await plain.text()
    assert "plotly.js" in text[:200] and len(text) > 1_000_000
    packed = await client.get("/ops/static/plotly.min.js", headers={"Accept-Encoding": "gzip"})
    assert packed.headers["Content-Encoding"] == "gzip"
    assert await packed.text() == text  # the client decompresses


async def test_lag_json_carries_groups_partitions_history_and_figures(client_for):
    client, _ = await client_for(samples=5)
    doc = await (await client.get("/ops/lag.json")).json()
    assert doc["error"] is None
    (group,) = doc["groups"]
    assert group["group"] == "g" and group["status"] == "STOP" and group["lag"] == 50
    p0, p1 = group["partitions"]
    assert (p0["committed"], p0["end"], p0["lag"], p0["status"]) == (100, 150, 50, "STOP")
    assert p0["lag_seconds"] == 25.0
    assert (p1["committed"], p1["lag"], p1["status"]) == (None, None, "OK")
    assert len(doc["history"]["at"]) == 5
    assert doc["history"]["lag"]["g"] == [10, 20, 30, 40, 50]
    assert doc["history"]["dlq_rate"] == [None, 2.0, 2.0, 2.0, 2.0]
    assert doc["dlq_rate"] == 2.0
    assert {f["name"]: f["value"] for f in doc["figures"]} == {"events_stored": 42,
                                                               "profiles": None}


async def test_metrics_have_labels_statuses_and_no_zero_for_unavailable_figures(client_for):
    client, _ = await client_for(samples=5)
    resp = await client.get("/metrics")
    assert resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    lines = set(text.splitlines())
    labels = 'group="g",partition="0",topic="events.view"'
    assert f"streams_ops_partition_lag{{{labels}}} 50.0" in lines
    assert f"streams_ops_partition_lag_seconds{{{labels}}} 25.0" in lines
    assert f"streams_ops_partition_committed_offset{{{labels}}} 100.0" in lines
    assert f"streams_ops_partition_end_offset{{{labels}}} 150.0" in lines
    assert ('streams_ops_partition_status{group="g",partition="0",'
            'streams_ops_partition_status="STOP",topic="events.view"} 1.0') in lines
    assert ('streams_ops_group_status{group="g",streams_ops_group_status="STOP"} 1.0') in lines
    assert ('streams_ops_group_status{group="g",streams_ops_group_status="OK"} 0.0') in lines
    assert 'streams_ops_group_lag{group="g"} 50.0' in lines
    assert 'streams_ops_topic_produce_rate{topic="events.view"} 10.0' in lines
    assert 'streams_ops_dlq_rate{topic="events.dlq"} 2.0' in lines
    assert 'streams_ops_pipeline_figure{figure="events_stored"} 42.0' in lines
    assert 'streams_ops_pipeline_available{figure="profiles"} 0.0' in lines
    assert not any(line.startswith('streams_ops_pipeline_figure{figure="profiles"}')
                   for line in lines)
    # Never committed: no committed-offset or lag series, only the end offset.
    assert not any('partition="1"' in line and line.startswith("streams_ops_partition_lag{")
                   for line in lines)
    assert "streams_ops_sample_ok 1.0" in lines
    # The default registry rides along: other domains' metrics and the process's own.
    assert any(line.startswith("process_") or line.startswith("python_info") for line in lines)


async def test_metrics_pass_promtool_lint_with_every_family_populated(client_for):
    from streams import metrics as stage_metrics
    from streams.ingest.metrics import COUNTERS, EVENTS_ACCEPTED, EVENTS_REJECTED, REQUESTS_REFUSED

    # Every family the server exposes gets a sample, so that promtool sees each one.
    COUNTERS[EVENTS_ACCEPTED].labels("view", "web").inc(0)
    COUNTERS[EVENTS_REJECTED].labels("web").inc(0)
    COUNTERS[REQUESTS_REFUSED].labels("413").inc(0)
    stage_metrics.observe_batch("lint", 10, 0.01, 0.002)
    stage_metrics.count_events("lint", "stored", 0)
    client, _ = await client_for(samples=5)
    body = await (await client.get("/metrics")).read()
    assert promtool_findings(body) == ""
    assert b"streams_ops_pipeline_figure{" in body and b"ingest_collector_" in body
    assert b"streams_stage_batch_events_bucket{" in body


async def test_page_forbids_foreign_scripts_and_framing(client_for):
    client, _ = await client_for()
    page = await client.get("/ops")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
