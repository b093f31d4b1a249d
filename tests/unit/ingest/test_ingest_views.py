"""The collector's HTTP adapter with a stand-in writer (the Kafka path itself is covered
by the integration tests): it answers only after the writer returned, and maps a writer
failure to a 503 that names Kafka."""

from __future__ import annotations

import asyncio
import base64

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from streams.ingest.views import Collector, CollectorConfigError, register
from streams.settings import load_settings

AUTH = {"Authorization": "Basic " + base64.b64encode(b"wk_web:").decode()}


class GatedWriter:
    """Records what it is given and holds each write until ``gate`` is set."""

    def __init__(self, fail: Exception | None = None):
        self.gate = asyncio.Event()
        self.written: list = []
        self.fail = fail

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def write(self, records) -> None:
        await self.gate.wait()
        if self.fail:
            raise self.fail
        self.written.extend(records)


async def _client(writer) -> TestClient:
    settings = load_settings(topic_prefix="unit.")
    app = web.Application()

    async def no_topics(_settings) -> None:
        return None

    register(app, settings, collector=Collector(settings, writer=writer,
                                                prepare_topics=no_topics))
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_answer_waits_for_the_write_to_be_acknowledged():
    writer = GatedWriter()
    client = await _client(writer)
    try:
        request = asyncio.ensure_future(client.post(
            "/v1/page", data=orjson.dumps({"anonymousId": "a", "name": "Home"}), headers=AUTH))
        await asyncio.sleep(0.3)
        assert not request.done()  # no answer while Kafka has not acknowledged
        writer.gate.set()
        response = await request
        assert response.status == 200 and (await response.json())["accepted"] == 1
        assert [r.topic for r in writer.written] == ["unit.events.view"]
    finally:
        await client.close()


async def test_writer_failure_is_503_naming_kafka():
    writer = GatedWriter(fail=ConnectionError("broker gone"))
    writer.gate.set()
    client = await _client(writer)
    try:
        response = await client.post("/v1/track", headers=AUTH,
                                      data=orjson.dumps({"userId": "u", "event": "Clicked"}))
        body = await response.json()
        assert response.status == 503 and body["field"] == "kafka"
        assert "retry" in body["message"]
    finally:
        await client.close()


async def test_body_that_cannot_be_decoded_is_400_naming_content_encoding():
    writer = GatedWriter()
    writer.gate.set()
    client = await _client(writer)
    try:
        response = await client.post("/v1/batch", data=b"\x1f\x8bnot gzip at all",
                                      headers={**AUTH, "Content-Encoding": "gzip"})
        body = await response.json()
        assert response.status == 400 and body["field"] == "Content-Encoding"
        assert "gzip" in body["message"] and writer.written == []
    finally:
        await client.close()


def test_write_key_bound_to_unknown_source_is_refused_at_startup():
    settings = load_settings(write_keys="wk_a=web,wk_b=fax")
    with pytest.raises(CollectorConfigError, match="#2") as info:
        Collector(settings, writer=GatedWriter())
    assert "fax" in str(info.value) and "wk_b" not in str(info.value)


async def test_key_over_its_rate_is_refused_before_its_body_is_read():
    writer = GatedWriter()
    writer.gate.set()
    settings = load_settings(topic_prefix="unit.", collector_rate=0.01, collector_burst=1)
    app = web.Application()

    async def no_topics(_settings) -> None:
        return None

    register(app, settings, collector=Collector(settings, writer=writer,
                                                prepare_topics=no_topics))
    client = TestClient(TestServer(app))
    await client.start_server()
    try:
        response = await client.post("/v1/page", headers=AUTH,
                                      data=orjson.dumps({"anonymousId": "a", "name": "Home"}))
        assert response.status == 200
        # Malformed, and over the size limit: neither is looked at, the rate answers first.
        for body in (b"{not json", b"x" * (600 * 1024)):
            response = await client.post("/v1/batch", data=body, headers=AUTH)
            answer = await response.json()
            assert (response.status, answer["field"]) == (429, "rate"), answer
            assert int(response.headers["Retry-After"]) >= 1
        assert len(writer.written) == 1
    finally:
        await client.close()
