"""Credentials: forget digests, the local secrets file, scrubbing secrets out of text."""

from __future__ import annotations

import hashlib
import hmac
import json
import stat
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.credentials import (
    environment_secrets,
    forget_digest,
    legacy_digest,
    local_secrets,
    scrub,
)


def test_forget_digest_is_keyed_and_differs_from_the_unkeyed_form():
    ident = "email:ann@example.com"
    plain = hashlib.sha256(ident.encode()).digest()
    assert legacy_digest(ident) == plain
    a, b = forget_digest(ident, b"key-one-0123456789"), forget_digest(ident, b"key-two-0123456789")
    assert a != b and plain not in (a, b) and len(a) == 32
    assert forget_digest(ident, b"key-one-0123456789") == a  # stable


def test_local_secrets_are_made_once_private_and_reused(tmp_path):
    data = tmp_path / "data"
    assert local_secrets(data, create=False) is None
    first = local_secrets(data)
    assert first is not None and first.created
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600
    assert len(first.api_token.get_secret_value()) > 40
    assert len(first.forget_key.get_secret_value()) >= 32
    again = local_secrets(data)
    assert not again.created
    assert again.api_token == first.api_token and again.forget_key == first.forget_key
    assert "api_token" not in repr(again) or first.api_token.get_secret_value() not in repr(again)
    # Loosened by hand: tightened again on the next read.
    first.path.chmod(0o644)
    local_secrets(data)
    assert stat.S_IMODE(first.path.stat().st_mode) == 0o600


def test_concurrent_first_runs_agree_on_one_set_of_secrets(tmp_path):
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda _: local_secrets(tmp_path), range(16)))
    assert len({m.api_token.get_secret_value() for m in made}) == 1
    assert sum(m.created for m in made) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secrets.json"]  # no temporary files


def test_a_foreign_secrets_file_is_refused(tmp_path):
    (tmp_path / "secrets.json").write_text(json.dumps({"other": 1}))
    with pytest.raises(ValueError, match="not a streams secrets file"):
        local_secrets(tmp_path)


def test_environment_secrets_are_found_even_when_settings_would_not_parse():
    env = {
        "STREAMS_DATABASE_URL": "postgresql://u:hunter2@h:99999/db",
        "STREAMS_WRITE_KEYS": "sk_live_abc=web,broken",
        "STREAMS_API_TOKENS": "tok=en=read,tok_two=admin",
        "STREAMS_OPS_TOKEN": "op_secret",
        "STREAMS_FORGET_KEY": "forget_secret",
        "STREAMS_HTTP_HOST": "not-a-secret",
    }
    found = environment_secrets(env)
    assert {"hunter2", "sk_live_abc", "broken", "tok=en", "tok_two", "op_secret",
            "forget_secret"} <= found
    assert "not-a-secret" not in found
    assert environment_secrets({"STREAMS_DATABASE_URL": "postgresql://u:p%40ss@[::1/db"}) == {
        "p@ss"}


def test_scrub_hides_plain_and_url_encoded_forms():
    text = "connect postgresql://u:p%40ss@h failed; password p@ss; token sk_live_abc"
    out = scrub(text, {"p@ss", "sk_live_abc"})
    assert "p@ss" not in out and "p%40ss" not in out and "sk_live_abc" not in out
    assert out.count("***") == 3


def test_local_secrets_fill_only_what_is_unset(tmp_path):
    from pydantic import SecretStr

    from streams.cli_support import with_local_secrets
    from streams.settings import load_settings

    bare = load_settings(data_dir=tmp_path, api_tokens="", forget_key=None)
    filled, local = with_local_secrets(bare, tokens=True)
    assert local is not None and local.created
    assert filled.api.forget_key == local.forget_key
    assert [(t.secret, t.scope) for t in filled.api.tokens] == [(local.api_token, "forget")]
    # A worker needs the key only; configured values are never replaced.
    worker, _ = with_local_secrets(bare, tokens=False)
    assert worker.api.tokens == () and worker.api.forget_key == local.forget_key
    own = load_settings(data_dir=tmp_path, api_tokens="mine_0123=read",
                        forget_key=SecretStr("k" * 20))
    same, none = with_local_secrets(own, tokens=True)
    assert none is None and same is own


def test_no_local_forget_key_for_a_database_on_another_machine(tmp_path, capsys):
    from streams.cli_support import with_local_secrets
    from streams.settings import load_settings

    remote = load_settings(data_dir=tmp_path, forget_key=None,
                           database_url="postgresql://u:pw@db.internal:5432/prod")
    with pytest.raises(SystemExit) as exit_:
        with_local_secrets(remote, tokens=False)
    assert exit_.value.code == 2
    assert "STREAMS_FORGET_KEY is not set" in capsys.readouterr().err
    assert not (tmp_path / "secrets.json").exists()


@given(st.binary(max_size=200), st.text(max_size=300))
def test_forget_digest_is_hmac_sha256(key, identifier):
    # Keys shorter, as long as and longer than SHA-256's 64-byte block.
    assert forget_digest(identifier, key) == hmac.new(
        key, identifier.encode(), hashlib.sha256).digest()
