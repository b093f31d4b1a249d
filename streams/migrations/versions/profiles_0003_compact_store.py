"""Compact storage: half the bytes per profile.

Revision ID: profiles_0003
Revises: profiles_0002

- ``profiles``: the three JSONB columns (identity, provided, behaviour) become one
  ``document`` in the compact form of ``streams.profiles.codec`` (deflate against a
  preset dictionary: PostgreSQL never compresses rows under 2 KiB, and these are ~1.3).
- ``profile_events``: ``event`` becomes the compact form without message id and time;
  the time is a real column, ``event_time``, and the timeline index is on it instead of
  on the expression ``event ->> 't'``; ``stored_at`` (read by nothing) goes.
- ``identifier_to_profile_profile`` goes: no statement looks identifiers up by profile.

Existing rows are rewritten in batches of ``BATCH`` in the migration's transaction;
``downgrade`` rewrites them back.
"""

import base64
from datetime import UTC, datetime

import orjson
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from streams.profiles import codec

revision = "profiles_0003"
down_revision = "profiles_0002"
branch_labels = None
depends_on = None

BATCH = 5000
_NIL = "00000000-0000-0000-0000-000000000000"  # below every profile id (UUIDv5)
JSONB = postgresql.JSONB
# profiles_0001's split of the document over its three columns (for downgrade).
_IDENTITY = ("created", "identifiers", "merges", "notes")
_PROVIDED = ("traits", "preferences", "consent", "timezone", "groups")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _rows(bind, sql: str, first: str):
    """Every row of ``sql`` (which selects the key first and takes :last and :n) in
    keyset batches, starting after ``first`` (below every key)."""
    last = first
    while True:
        rows = bind.execute(sa.text(sql), {"last": last, "n": BATCH}).all()
        if not rows:
            return
        yield rows
        last = str(rows[-1][0])


def _time_text(t: str) -> str:
    """An event's canonical time as PostgreSQL reads it: years under 1000 padded."""
    return t if len(t) >= 27 else t.rjust(27, "0")


def _iso(moment: datetime) -> str:
    # streams.profiles.models.iso, repeated: a migration keeps its own meaning.
    utc = moment.astimezone(UTC)
    if utc.year < 1000:
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return utc.isoformat(timespec="microseconds")[:-6] + "Z"


def upgrade() -> None:
    bind = op.get_bind()
    # profiles: one compact document
    op.add_column("profiles", sa.Column("document", sa.LargeBinary))
    for rows in _rows(bind, "SELECT profile_id, identity, provided, behaviour FROM profiles "
                      "WHERE profile_id > CAST(:last AS uuid) "
                      "ORDER BY profile_id LIMIT :n", _NIL):
        docs = [{"p": str(pid), "d": _b64(codec.pack({"groups": {}, **i, **p, **b}))}
                for pid, i, p, b in rows]
        bind.execute(sa.text(
            "UPDATE profiles t SET document = decode(x.d, 'base64') FROM "
            "jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(p uuid, d text) "
            "WHERE t.profile_id = x.p"), {"rows": orjson.dumps(docs).decode()})
    op.alter_column("profiles", "document", nullable=False)
    for column in ("identity", "provided", "behaviour"):
        op.drop_column("profiles", column)

    # profile_events: a time column and the compact event
    op.drop_index("profile_events_profile", table_name="profile_events")
    op.alter_column("profile_events", "event", new_column_name="event_json")
    op.add_column("profile_events", sa.Column("event_time", sa.DateTime(timezone=True)))
    op.add_column("profile_events", sa.Column("event", sa.LargeBinary))
    for rows in _rows(bind, "SELECT message_id, event_json FROM profile_events "
                      "WHERE message_id > :last "
                      "ORDER BY message_id LIMIT :n", ""):
        out = []
        for message_id, doc in rows:
            t = doc.pop("t")
            doc.pop("m", None)
            out.append({"m": message_id, "t": _time_text(t), "e": _b64(codec.pack(doc))})
        bind.execute(sa.text(
            "UPDATE profile_events t SET event_time = CAST(x.t AS timestamptz), "
            "event = decode(x.e, 'base64') FROM jsonb_to_recordset(CAST(:rows AS jsonb)) "
            "AS x(m text, t text, e text) WHERE t.message_id = x.m"),
            {"rows": orjson.dumps(out).decode()})
    op.alter_column("profile_events", "event_time", nullable=False)
    op.alter_column("profile_events", "event", nullable=False)
    op.drop_column("profile_events", "event_json")
    op.drop_column("profile_events", "stored_at")
    op.create_index("profile_events_profile", "profile_events",
                    ["profile_id", "event_time", "message_id"])

    op.drop_index("identifier_to_profile_profile", table_name="identifier_to_profile")


def downgrade() -> None:
    bind = op.get_bind()
    op.create_index("identifier_to_profile_profile", "identifier_to_profile", ["profile_id"])

    op.drop_index("profile_events_profile", table_name="profile_events")
    op.add_column("profile_events", sa.Column("event_json", JSONB))
    op.add_column("profile_events", sa.Column(
        "stored_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.text("now()")))
    for rows in _rows(bind, "SELECT message_id, event_time, event FROM profile_events "
                      "WHERE message_id > :last "
                      "ORDER BY message_id LIMIT :n", ""):
        out = [{"m": m, "e": {"m": m, "t": _iso(t), **codec.unpack(e)}} for m, t, e in rows]
        bind.execute(sa.text(
            "UPDATE profile_events t SET event_json = x.e FROM "
            "jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(m text, e jsonb) "
            "WHERE t.message_id = x.m"), {"rows": orjson.dumps(out).decode()})
    op.drop_column("profile_events", "event")
    op.drop_column("profile_events", "event_time")
    op.alter_column("profile_events", "event_json", new_column_name="event", nullable=False)
    op.create_index("profile_events_profile", "profile_events",
                    ["profile_id", sa.text("(event ->> 't')"), "message_id"])

    for column in ("identity", "provided", "behaviour"):
        op.add_column("profiles", sa.Column(column, JSONB))
    for rows in _rows(bind, "SELECT profile_id, document FROM profiles "
                      "WHERE profile_id > CAST(:last AS uuid) "
                      "ORDER BY profile_id LIMIT :n", _NIL):
        out = []
        for pid, data in rows:
            doc = codec.unpack(data)
            out.append({"p": str(pid),
                        "i": {k: doc.pop(k) for k in _IDENTITY if k in doc},
                        "v": {k: doc.pop(k) for k in _PROVIDED if k in doc}, "b": doc})
        bind.execute(sa.text(
            "UPDATE profiles t SET identity = x.i, provided = x.v, behaviour = x.b FROM "
            "jsonb_to_recordset(CAST(:rows AS jsonb)) AS x(p uuid, i jsonb, v jsonb, b jsonb) "
            "WHERE t.profile_id = x.p"), {"rows": orjson.dumps(out).decode()})
    for column in ("identity", "provided", "behaviour"):
        op.alter_column("profiles", column, nullable=False)
    op.drop_column("profiles", "document")
