"""Fixtures of the ingestion integration tests: a collector on a free loopback port, in
this process or as a ``streams serve`` subprocess."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from aiohttp import ClientSession, web

from streams.infra.procs import stop_session
from streams.server import create_web_app
from streams.settings import Settings
from tests.helpers import child_env
from tests.leak_scan import RECORDER

from .support import Client, free_port


@pytest.fixture
async def start_collector():
    """Factory: run the collector (the whole ``streams serve`` app) in this process."""
    runners: list[web.AppRunner] = []
    sessions: list[ClientSession] = []

    async def start(settings: Settings) -> Client:
        runner = web.AppRunner(create_web_app(settings), access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # noqa: SLF001
        session = ClientSession()
        sessions.append(session)
        return Client(session, f"http://127.0.0.1:{port}")

    yield start
    for session in sessions:
        await session.close()
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
def spawn_server(tmp_path):
    """Factory: ``streams serve`` as a subprocess on a free port; returns its base URL."""
    procs: list[subprocess.Popen] = []

    def spawn(settings: Settings) -> str:
        import requests

        settings = settings.model_copy(update={"http_port": free_port()})
        log = open(tmp_path / f"serve-{len(procs)}.log", "wb")
        RECORDER.add_file(tmp_path / f"serve-{len(procs)}.log", "streams serve")
        proc = subprocess.Popen([sys.executable, "-m", "streams", "serve"],
                                env=child_env(settings), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        procs.append(proc)
        url = f"http://127.0.0.1:{settings.http_port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert proc.poll() is None, (tmp_path / f"serve-{len(procs) - 1}.log").read_text()
            try:
                if requests.get(url + "/healthz", timeout=1).status_code == 200:
                    return url
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        raise AssertionError("streams serve did not come up within 60s")

    yield spawn
    for proc in procs:
        stop_session(proc)
