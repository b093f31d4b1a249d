"""Credentials of the product, and keeping them out of print.

- API tokens (``STREAMS_API_TOKENS``, ``token=scope`` pairs) open the profile API and
  the person page; parsed here, checked by ``streams.auth``.
- The forget key (``STREAMS_FORGET_KEY``) keys the hashes that remember forgotten
  identifiers (``forget_digest``).
- ``streams up`` (and ``serve`` / ``worker`` on one machine) keep a generated token and
  forget key in ``<data_dir>/secrets.json`` (mode 0600), reused on later runs.
- ``environment_secrets`` and ``scrub`` hide every configured secret in text the command
  line prints (a traceback, a driver's error), even when the settings do not parse.

Pure apart from the secrets file; no aiohttp, no SQL.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import SecretStr

__all__ = ["SCOPES", "ApiToken", "LocalSecrets", "parse_api_tokens", "scopes_allowed",
           "forget_digest", "legacy_digest", "local_secrets", "environment_secrets", "scrub",
           "SECRETS_FILE", "MIN_FORGET_KEY_LENGTH"]

# ``forget`` implies ``read``: whoever erases a person must first find them (by an
# identifier) and see what goes; a read token can never erase.
SCOPES: dict[str, frozenset[str]] = {
    "read": frozenset({"read"}),
    "forget": frozenset({"read", "forget"}),
}
SECRETS_FILE = "secrets.json"
MIN_FORGET_KEY_LENGTH = 16


@dataclass(frozen=True, slots=True)
class ApiToken:
    """One API token: the secret, its scope and a printable name (its position in
    ``STREAMS_API_TOKENS``, ``#1``...). ``digest`` (SHA-256 of the token) is what
    requests are compared with, so that every comparison has the same length."""

    secret: SecretStr = field(repr=False)
    scope: str
    name: str
    digest: bytes = field(repr=False, default=b"")

    @classmethod
    def make(cls, token: str, scope: str, name: str) -> ApiToken:
        """A token with its digest computed."""
        return cls(SecretStr(token), scope, name, hashlib.sha256(token.encode()).digest())

    def allows(self, scope: str) -> bool:
        """Whether this token's scope allows a call that needs ``scope``."""
        return scope in SCOPES[self.scope]


def parse_api_tokens(raw: str | SecretStr | None) -> tuple[ApiToken, ...]:
    """Parse ``token=scope,token=scope``. Raises ValueError naming the entry's position
    (never the token: it is a credential) when an entry is malformed, has an unknown
    scope or repeats a token."""
    text = raw.get_secret_value() if isinstance(raw, SecretStr) else str(raw or "")
    tokens: list[ApiToken] = []
    seen: set[str] = set()
    for position, pair in enumerate((p.strip() for p in text.split(",") if p.strip()), 1):
        # rpartition: a token may hold '=' (base64 padding), a scope never does.
        token, sep, scope = pair.rpartition("=")
        token, scope = token.strip(), scope.strip().lower()
        if not sep or not token or not scope:
            raise ValueError(f"STREAMS_API_TOKENS entry #{position} is not of the form "
                             "token=scope")
        if scope not in SCOPES:
            raise ValueError(f"STREAMS_API_TOKENS entry #{position} has unknown scope "
                             f"{scope[:20]!r}; expected one of {', '.join(SCOPES)}")
        if token in seen:
            raise ValueError(f"STREAMS_API_TOKENS entry #{position} repeats an earlier token")
        seen.add(token)
        tokens.append(ApiToken.make(token, scope, f"#{position}"))
    return tuple(tokens)


def scopes_allowed(tokens: Iterable[ApiToken]) -> set[str]:
    """Every scope some token allows (for messages and checks)."""
    return {s for t in tokens for s in SCOPES[t.scope]}


# --- forgotten identifiers -------------------------------------------------------------


def forget_digest(identifier: str, key: bytes) -> bytes:
    """HMAC-SHA256 of ``TYPE:VALUE`` under the forget key: how a forgotten identifier is
    remembered. Without the key nobody can test a guessed email or phone against it.

    The same bytes as ``hmac.new(key, identifier.encode(), hashlib.sha256).digest()``
    (a unit test compares them), from SHA-256 states primed once per key with the key's
    inner and outer pads (RFC 2104): 0.7 µs instead of 1.5, asked for every new
    identifier of every batch."""
    inner, outer = _hmac_states(key)
    h = inner.copy()
    h.update(identifier.encode())
    o = outer.copy()
    o.update(h.digest())
    return o.digest()


_BLOCK = 64  # SHA-256's block size
_PAD_IN = bytes(x ^ 0x36 for x in range(256))
_PAD_OUT = bytes(x ^ 0x5C for x in range(256))


@functools.lru_cache(maxsize=4)
def _hmac_states(key: bytes) -> tuple:
    """SHA-256 states that have absorbed ``key``'s inner and outer pads."""
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    return hashlib.sha256(key.translate(_PAD_IN)), hashlib.sha256(key.translate(_PAD_OUT))


def legacy_digest(identifier: str) -> bytes:
    """Unkeyed SHA-256 of ``TYPE:VALUE``: how identifiers forgotten before the forget key
    existed are stored (they cannot be re-keyed: their values are gone)."""
    return hashlib.sha256(identifier.encode()).digest()


# --- the local secrets file --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LocalSecrets:
    """The generated secrets of one data folder. ``created``: made by this call."""

    api_token: SecretStr = field(repr=False)
    forget_key: SecretStr = field(repr=False)
    path: Path
    created: bool = False


def _generate() -> dict[str, str]:
    return {"api_token": "st_" + secrets.token_urlsafe(32),
            "forget_key": secrets.token_urlsafe(32)}


def local_secrets(data_dir: Path, create: bool = True) -> LocalSecrets | None:
    """The API token and forget key kept in ``<data_dir>/secrets.json``; made (mode
    0600, atomically: concurrent callers agree on one) when missing and ``create``.
    None when missing and not ``create``. Raises OSError when the file cannot be read
    or written, ValueError when it is not ours. Blocks on the file system."""
    path = data_dir.resolve() / SECRETS_FILE
    created = False
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SECRETS_FILE}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(_generate(), out)
            # link() fails when another process made the file first: theirs wins.
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
                created = True
        finally:
            tmp.unlink(missing_ok=True)
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)  # someone loosened it: the token opens people's data
    try:
        doc = json.loads(path.read_text())
        token, key = str(doc["api_token"]), str(doc["forget_key"])
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{path} is not a streams secrets file; move it away") from None
    return LocalSecrets(SecretStr(token), SecretStr(key), path, created)


# --- keeping secrets out of print ------------------------------------------------------


def _url_password(url: str) -> str | None:
    try:
        password = urlsplit(url).password
    except ValueError:
        # Unparseable (bad port, bad IPv6): take what sits between ':' and the last '@'.
        netloc = url.partition("://")[2].rpartition("@")[0]
        password = netloc.partition(":")[2] or None
    return unquote(password) if password else None


def environment_secrets(environ: Mapping[str, str]) -> set[str]:
    """Every secret configured in ``STREAMS_*`` variables, parsed leniently (never
    raises): the database password, write keys, API tokens, the ops token and the
    forget key. Used to scrub text even when the settings do not validate."""
    found: set[str] = set()
    if url := environ.get("STREAMS_DATABASE_URL"):
        if password := _url_password(url):
            found.add(password)
    for name, take_left in (("STREAMS_WRITE_KEYS", True), ("STREAMS_API_TOKENS", False)):
        for pair in environ.get(name, "").split(","):
            left, sep, right = (pair.partition("=") if take_left else pair.rpartition("="))
            found.add((left if sep else pair).strip())
    for name in ("STREAMS_OPS_TOKEN", "STREAMS_FORGET_KEY"):
        found.add(environ.get(name, "").strip())
    # Very short values would scrub ordinary words; nothing that short is a real secret.
    return {s for s in found if len(s) >= 4}


def scrub(text: str, secret_values: Iterable[str]) -> str:
    """``text`` with every secret (and its URL-encoded form) replaced by ``***``."""
    from urllib.parse import quote

    for secret in sorted(set(secret_values), key=len, reverse=True):
        for form in {secret, quote(secret, safe="")}:
            text = text.replace(form, "***")
    return text
