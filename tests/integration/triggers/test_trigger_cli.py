"""``streams triggers stats`` and ``streams messages tail`` as an operator runs them (child
processes), and the ops figures, against the real PostgreSQL and Kafka."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from sqlalchemy import insert

from streams.db import async_engine, in_schema
from streams.ops.store import read_pipeline_figures, read_trigger_figures
from streams.topics import ensure_topics
from streams.triggers.tables import scheduled_messages
from tests.helpers import child_env, unique
from tests.leak_scan import RECORDER
from tests.profiles_helpers import drop_profiles_schema, with_profiles_schema

from .messages_support import produce_messages, welcome_message

T = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)

# (rule, status, reason, converted) and how many rows of each.
ROWS = [
    (("welcome", "sent", None, True), 2), (("welcome", "sent", None, False), 2),
    (("welcome", "held_out", None, True), 1), (("welcome", "held_out", None, False), 3),
    (("welcome", "pending", None, False), 1),
    (("welcome", "suppressed", "consent", False), 2),
    (("welcome", "suppressed", "cap", False), 1),
    (("welcome", "cancelled", "superseded", False), 1),
    (("browse_abandonment", "cancelled", "exit", False), 3),
    (("browse_abandonment", "suppressed", "quiet_hours", False), 1),
    (("browse_abandonment", "suppressed", "expired", False), 1),
    (("browse_abandonment", "suppressed", "forgotten", False), 1),
]


@pytest.fixture
async def settings(make_settings):
    s = await with_profiles_schema(make_settings(topic_prefix=unique("tc") + "."))
    yield s
    await drop_profiles_schema(s)


async def insert_rows(settings) -> None:
    rows = []
    for (rule, status, reason, converted), n in ROWS:
        for _ in range(n):
            mid = str(uuid.uuid4())
            rows.append({
                "message_id": mid, "rule": rule, "profile_id": str(uuid.uuid4()),
                "status": status, "reason": reason, "intent": {"messageId": mid},
                "due_at": T, "expires_at": T + timedelta(days=1),
                "sent_at": T if status == "sent" else None,
                "decided_at": None if status == "pending" else T,
                "converted_at": T + timedelta(hours=1) if converted else None})
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.execution_options(**in_schema(settings.profiles_schema))
            await conn.execute(insert(scheduled_messages), rows)
    finally:
        await engine.dispose()


async def run_cli(settings, *args: str, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", *args, env=child_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    return proc.returncode, out.decode(), err.decode()


WELCOME_STATS = {
    "rule": "welcome", "scheduled": 13, "pending": 1, "sent": 4, "heldOut": 4,
    "cancelled": {"superseded": 1}, "suppressed": {"consent": 2, "cap": 1},
    "convertedSent": 2, "convertedHeldOut": 1, "lift": 0.25}
BROWSE_STATS = {
    "rule": "browse_abandonment", "scheduled": 6, "pending": 0, "sent": 0, "heldOut": 0,
    "cancelled": {"exit": 3},
    "suppressed": {"quiet_hours": 1, "expired": 1, "forgotten": 1},
    "convertedSent": 0, "convertedHeldOut": 0, "lift": None}


async def test_triggers_stats_counts_the_schedule_per_rule(settings):
    await insert_rows(settings)
    code, out, err = await run_cli(settings, "triggers", "stats", "--json")
    assert code == 0, err
    stats = {s["rule"]: s for s in orjson.loads(out)["rules"]}
    # Every built-in rule is listed, those with nothing scheduled too.
    assert set(stats) == {"welcome", "browse_abandonment", "cross_device", "re_engagement",
                          "social_follow_up"}
    assert stats["welcome"] == WELCOME_STATS
    assert stats["browse_abandonment"] == BROWSE_STATS
    assert stats["cross_device"]["scheduled"] == 0
    code, out, err = await run_cli(settings, "triggers", "stats")
    assert code == 0, err
    welcome = next(line for line in out.splitlines() if line.strip().startswith("welcome"))
    assert welcome.split()[:5] == ["welcome", "13", "1", "4", "4"]
    assert "+25.0 pts" in welcome and "3 (consent 2, cap 1)" in welcome


async def test_triggers_stats_without_the_table_says_so_without_the_password(settings):
    elsewhere = settings.model_copy(update={"profiles_schema": unique("none_")})
    code, out, err = await run_cli(elsewhere, "triggers", "stats")
    assert code == 1 and out == ""
    flat = " ".join(err.split())  # the console wraps long lines
    assert "table scheduled_messages does not exist" in flat and "db upgrade" in flat
    # The local password is a common word ("streams"): look for it where the URL has it.
    assert f":{settings.database.password}@" not in err and ":***@" in err


async def test_ops_figures_read_the_schedule_in_the_configured_schema(settings):
    await insert_rows(settings)
    engine = async_engine(settings, pool_size=1, max_overflow=0)
    try:
        figures = {f.name: f for f in await read_pipeline_figures(
            engine, schema=settings.profiles_schema)}
        triggers = await read_trigger_figures(engine, settings.profiles_schema)
        missing = await read_trigger_figures(engine, unique("none_"))
    finally:
        await engine.dispose()
    assert figures["messages_scheduled"].value == 19
    assert figures["messages_sent"].value == 4
    assert triggers.unavailable is None
    assert {r["rule"]: r for r in triggers.rules} == {
        "welcome": WELCOME_STATS, "browse_abandonment": BROWSE_STATS}
    assert missing.rules == () and missing.unavailable == (
        "table scheduled_messages does not exist")


async def test_ops_trigger_figures_on_an_unreachable_database_are_unavailable(settings):
    target = settings.database
    from pydantic import SecretStr

    url = f"postgresql+psycopg://{target.user}:{target.password}@127.0.0.1:1/{target.dbname}"
    engine = async_engine(settings.model_copy(update={"database_url": SecretStr(url)}),
                          pool_size=1, max_overflow=0)
    try:
        figures = await read_trigger_figures(engine, settings.profiles_schema)
    finally:
        await engine.dispose()
    assert figures.rules == () and figures.unavailable == "database unreachable"


async def test_tail_from_the_beginning_prints_max_json_documents(settings):
    await ensure_topics(settings)
    docs = [welcome_message(n) for n in range(3)]
    # One person's messages share a key, hence a partition, hence their order.
    for doc in docs:
        doc["profileId"] = docs[0]["profileId"]
    await produce_messages(settings, docs)
    code, out, err = await run_cli(settings, "messages", "tail", "--from-beginning",
                                   "--max", "2", "--json")
    assert code == 0, err
    assert [orjson.loads(line) for line in out.splitlines()] == docs[:2]
    assert "from the beginning, until 2 messages" in err


async def start_tail(settings, *args: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streams", "messages", "tail", *args, env=child_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    # Positioned at the end once it says so: what is produced afterwards is seen.
    line = await asyncio.wait_for(proc.stderr.readline(), 60)
    RECORDER.add_text("subprocess stderr", "streams messages tail", line)  # the leak scan
    assert b"following " in line and b"from now" in line, line
    return proc


async def test_tail_from_now_shows_new_messages_only_one_line_each(settings):
    await ensure_topics(settings)
    old = welcome_message(10)
    await produce_messages(settings, [old])
    proc = await start_tail(settings, "--max", "2")
    new = [welcome_message(11), welcome_message(12)]
    await produce_messages(settings, new)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    assert len(lines) == 2
    assert sorted(line.split()[5] for line in lines) == sorted(
        d["profileId"][:8] for d in new)
    for line in lines:
        # time, channel, destination type, rule, profile prefix, template
        assert line.split()[2:5] == ["web", "anonymous_id", "welcome"]
        assert line.split()[6] == "welcome-v1"


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
async def test_tail_stops_cleanly_on_ctrl_c_and_sigterm(settings, sig):
    await ensure_topics(settings)
    proc = await start_tail(settings, "--json")
    await produce_messages(settings, [welcome_message(20)])
    first = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert orjson.loads(first)["rule"] == "welcome"
    proc.send_signal(sig)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0
    assert out == b""
    assert b"stopped after 1 message" in err and b"Traceback" not in err
