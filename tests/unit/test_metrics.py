"""A stage's metrics (streams/metrics.py): the helpers, and the worker's own /metrics."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
import uuid

import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from streams import metrics
from streams.ops.views import OpsConfigError
from streams.settings import load_settings
from tests.promtool import promtool_findings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def stage() -> str:
    # The registry is process-wide: each test counts under a stage label of its own.
    return f"stage-{uuid.uuid4().hex[:8]}"


def sample(name: str, **labels: str) -> float | None:
    return REGISTRY.get_sample_value(name, labels)


def test_observe_batch_feeds_three_histograms(stage):
    metrics.observe_batch(stage, 500, write_seconds=0.2, ack_seconds=0.003)
    metrics.observe_batch(stage, 3, write_seconds=0.004, ack_seconds=0.001)
    assert sample("streams_stage_batch_events_count", stage=stage) == 2
    assert sample("streams_stage_batch_events_sum", stage=stage) == 503
    assert sample("streams_stage_batch_events_bucket", stage=stage, le="5.0") == 1
    assert sample("streams_stage_batch_write_seconds_sum", stage=stage) == pytest.approx(0.204)
    assert sample("streams_stage_batch_write_seconds_bucket", stage=stage, le="0.005") == 1
    assert sample("streams_stage_batch_ack_seconds_count", stage=stage) == 2
    assert sample("streams_stage_batch_ack_seconds_bucket", stage=stage, le="0.001") == 1


def test_counters_count_by_fixed_codes(stage):
    metrics.count_events(stage, "stored", 7)
    metrics.count_events(stage, "duplicate")
    metrics.count_events(stage, "skipped", 0)  # nothing to count: no series either
    metrics.count_dead_letter(stage, "data_fault")
    metrics.count_dead_letter(stage, "invalid", 2)
    metrics.count_retry(stage, "unavailable")
    metrics.count_retry(stage, "unavailable")
    metrics.count_retry(stage, "transient")
    assert sample("streams_stage_events_total", stage=stage, outcome="stored") == 7
    assert sample("streams_stage_events_total", stage=stage, outcome="duplicate") == 1
    assert sample("streams_stage_events_total", stage=stage, outcome="skipped") is None
    assert sample("streams_stage_dead_letters_total", stage=stage, reason="data_fault") == 1
    assert sample("streams_stage_dead_letters_total", stage=stage, reason="invalid") == 2
    assert sample("streams_stage_retries_total", stage=stage, **{"class": "unavailable"}) == 2
    assert sample("streams_stage_retries_total", stage=stage, **{"class": "transient"}) == 1


def test_free_text_never_becomes_a_label(stage):
    with pytest.raises(ValueError, match="dead-letter reason 'value too long"):
        metrics.count_dead_letter(stage, "value too long for index on profile_identifiers")
    with pytest.raises(ValueError, match="retry class"):
        metrics.count_retry(stage, "OperationalError")
    with pytest.raises(ValueError, match="outcome"):
        metrics.count_events(stage, "ok")
    assert sample("streams_stage_dead_letters_total", stage=stage,
                  reason="value too long for index on profile_identifiers") is None


def test_names_are_the_dotted_names_with_underscores():
    assert metrics.prometheus_name(metrics.BATCH_WRITE_SECONDS) == \
        "streams_stage_batch_write_seconds"
    names = {m.name for m in REGISTRY.collect()}
    for dotted in (metrics.BATCH_EVENTS, metrics.BATCH_WRITE_SECONDS, metrics.BATCH_ACK_SECONDS,
                   metrics.EVENTS, metrics.DEAD_LETTERS, metrics.RETRIES):
        assert metrics.prometheus_name(dotted) in names


def test_worker_metrics_are_off_by_default():
    assert load_settings().worker_metrics_port == 0
    assert metrics.serve_worker_metrics(load_settings()) is None


def scrape(url: str, headers: dict[str, str] | None = None) -> bytes:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                timeout=5) as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        return resp.read()


def test_worker_serves_a_lint_clean_exposition(stage):
    metrics.observe_batch(stage, 120, write_seconds=0.05, ack_seconds=0.002)
    metrics.count_events(stage, "stored", 118)
    metrics.count_events(stage, "dead_lettered", 2)
    metrics.count_dead_letter(stage, "failed", 2)
    metrics.count_retry(stage, "transient")
    server = metrics.serve_worker_metrics(load_settings(worker_metrics_port=free_port()))
    assert server is not None
    try:
        body = scrape(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.close()
    assert promtool_findings(body) == ""
    assert f'streams_stage_batch_events_count{{stage="{stage}"}} 1.0'.encode() in body
    assert f'streams_stage_dead_letters_total{{reason="failed",stage="{stage}"}} 2.0'.encode() \
        in body


def test_worker_metrics_need_the_ops_token_when_set():
    token = "w0rker-token"
    settings = load_settings(worker_metrics_port=free_port(), ops_token=SecretStr(token))
    server = metrics.serve_worker_metrics(settings)
    assert server is not None
    url = f"http://127.0.0.1:{server.port}/metrics"
    try:
        for headers, target in (({}, url), ({"Authorization": "Bearer nope"}, url),
                                ({}, url + "?token=nope")):
            with pytest.raises(urllib.error.HTTPError) as denied:
                scrape(target, headers)
            assert denied.value.code == 401
            assert token.encode() not in denied.value.read()
        assert b"streams_stage_" in scrape(url, {"Authorization": f"Bearer {token}"})
        assert b"streams_stage_" in scrape(url + f"?token={token}")
    finally:
        server.close()


def test_worker_metrics_refuse_an_open_non_loopback_binding():
    with pytest.raises(OpsConfigError, match="not a loopback"):
        metrics.serve_worker_metrics(load_settings(http_host="0.0.0.0",
                                                   worker_metrics_port=free_port()))
