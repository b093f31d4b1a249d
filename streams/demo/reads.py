"""What the demo storefront shows its visitor: the profile their browser's anonymousId
ended in (after sign-in, merged with the signed-in identifiers) and the messages the
trigger stage scheduled or sent for it. Blocks on the database (async); raises
SQLAlchemy's errors when it fails."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from streams.db import SqlNames, check_schema_name
from streams.identity.logic import normalize_value
from streams.identity.models import ANONYMOUS_ID, id_key
from streams.profiles.store import ProfileStore
from streams.triggers.tables import scheduled_messages

S = SqlNames(scheduled_messages)
MESSAGES_SHOWN = 20
_EXISTS = text(f"SELECT to_regclass('{S}') IS NOT NULL")
_MESSAGES = text(
    f"SELECT {S.rule}, {S.status}, {S.reason}, {S.channel}, {S.due_at}, {S.sent_at}, "
    f"{S.message} FROM {S} WHERE {S.profile_id} = CAST(:p AS uuid) "
    f"ORDER BY {S.due_at} DESC, {S.message_id} LIMIT {MESSAGES_SHOWN}")


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def message_view(row: Any) -> dict[str, Any]:
    """One schedule row as the page shows it: rule, status, channel, times, and of a sent
    message its template and personalization (no destination address)."""
    rule, status, reason, channel, due_at, sent_at, message = row
    doc: dict[str, Any] = {"rule": rule, "status": status, "reason": reason,
                           "channel": channel, "dueAt": _time(due_at),
                           "sentAt": _time(sent_at)}
    if isinstance(message, dict):
        doc["template"] = message.get("template")
        doc["personalization"] = message.get("personalization")
    return doc


async def visitor(engine: AsyncEngine, store: ProfileStore, schema: str | None,
                  anonymous_id: str) -> dict[str, Any] | None:
    """The visitor's profile id, identifiers, groups and counts, and their messages;
    None when no profile holds that anonymousId (yet)."""
    value = normalize_value(ANONYMOUS_ID, anonymous_id)
    if value is None:
        return None
    found = await store.find_by_identifier(id_key(ANONYMOUS_ID, value))
    if found is None:
        return None
    doc, history = found
    messages: list[dict] = []
    async with engine.connect() as conn:
        if schema:
            await conn.execute(text(f'SET LOCAL search_path TO "{check_schema_name(schema)}"'))
        if await conn.scalar(_EXISTS):
            messages = [message_view(r) for r in await conn.execute(_MESSAGES, {"p": doc["id"]})]
        await conn.rollback()
    return {
        "profileId": doc["id"],
        "identifiers": [dict(zip(("type", "value"), k.split(":", 1), strict=True))
                        for k in doc["identifiers"]],
        "groups": sorted(doc.get("groups", {})),
        "events": doc["counts"]["total"],
        "merges": len(history),
        "messages": messages,
    }
