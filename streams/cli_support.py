"""What every command module of the ``streams`` CLI shares: the consoles, settings read
with a clean error, the one-line failure, the local secrets, and the top-level group
that keeps secrets out of any error it prints. The command modules (``cli.py`` and each
domain's ``commands.py``) import this module, never each other."""

from __future__ import annotations

import os
import sys
import traceback
from typing import NoReturn

import click
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape

from streams.credentials import LocalSecrets, environment_secrets, local_secrets, scrub
from streams.settings import Settings, load_settings

# Piped output (CI logs, `| less`) gets wide lines instead of rich's 80-column default.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def settings_or_exit() -> Settings:
    """The settings from the environment; on a bad value prints one line per field at
    fault (never the value: it may be a secret) and exits with status 2."""
    try:
        return load_settings()
    except ValidationError as exc:
        _exit_on_bad_settings(exc)


def _exit_on_bad_settings(exc: ValidationError) -> NoReturn:
    # Never str(exc): pydantic's text repeats the input, which holds every secret (cut
    # short, so that scrubbing could miss a part of one).
    secret_values = environment_secrets(os.environ)
    for error in exc.errors():
        field = "STREAMS_" + "_".join(str(p) for p in error["loc"]).upper()
        # The messages are ours or pydantic's and name no value; scrubbed regardless.
        message = scrub(str(error["msg"]), secret_values)
        err_console.print(f"[red]error:[/red] {field}: {escape(message)}")
    sys.exit(2)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print ``error: message`` on stderr (configured secrets hidden) and exit with
    ``code``."""
    err_console.print(
        f"[red]error:[/red] {escape(scrub(message, environment_secrets(os.environ)))}")
    sys.exit(code)


class SecretSafeGroup(click.Group):
    """The top-level command group: an unexpected exception is printed with every
    configured secret (database password, write keys, tokens, forget key) replaced by
    ``***`` (exit status 1); a database that cannot be reached is one line."""

    def invoke(self, ctx: click.Context):
        """Run the command; see the class docstring. Blocks as the command does."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit,
                click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the last stop before the terminal
            if isinstance(exc, ValidationError) and exc.title == Settings.__name__:
                _exit_on_bad_settings(exc)  # settings read without settings_or_exit
            secret_values = environment_secrets(os.environ)
            from sqlalchemy.exc import DBAPIError

            if isinstance(exc, DBAPIError) and exc.orig is not None:
                first = (str(exc.orig).strip().splitlines() or ["?"])[0]
                fail(f"database error ({type(exc.orig).__name__}): "
                     f"{scrub(first, secret_values)}")
            text = "".join(traceback.format_exception(exc))
            sys.stderr.write(scrub(text, secret_values))
            sys.exit(1)


# --- local secrets (`streams up`, and `serve` / `worker` on one machine) ---------------


def with_local_secrets(settings: Settings, *, tokens: bool) -> tuple[Settings, LocalSecrets | None]:
    """``settings`` with what is unset filled from ``<data_dir>/secrets.json`` (made on
    first use, mode 0600): the forget key, and with ``tokens`` the API token (scope
    forget, which allows read) when STREAMS_API_TOKENS is empty. Returns the secrets
    file's contents when anything came from it.

    The forget key comes from the file only when the database is on this machine: with
    a shared database every worker and server must use one key, which only
    STREAMS_FORGET_KEY can promise. Exits with status 2 then. Blocks on the file."""
    from streams.ops.views import is_loopback

    update: dict[str, object] = {}
    need_key = settings.forget_key is None
    if need_key and not is_loopback(settings.database.host):
        fail(f"STREAMS_FORGET_KEY is not set and the database ({settings.database.host}) is "
             "not on this machine: set the same STREAMS_FORGET_KEY on every worker and "
             "server (for example: python -c 'import secrets; "
             "print(secrets.token_urlsafe(32))')", code=2)
    need_token = tokens and not settings.api.tokens
    if not (need_key or need_token):
        return settings, None
    try:
        local = local_secrets(settings.data_dir, create=True)
    except (OSError, ValueError) as exc:
        fail(f"cannot keep the local secrets in {settings.data_dir}: {exc}", code=2)
    assert local is not None  # create=True
    if need_key:
        update["forget_key"] = local.forget_key
    if need_token:
        update["api_tokens"] = SecretStr(f"{local.api_token.get_secret_value()}=forget")
    return settings.model_copy(update=update), local


def print_token_use(settings: Settings, local: LocalSecrets | None, *, show: bool) -> None:
    """Say how to call the profile API. With the local token: in clear when ``show``
    (``streams up``'s terminal; the token is this machine's, in a file only its owner
    reads), else only where it is kept (a server's output may end in a log file)."""
    base = settings.http.url
    example = f"'{base}/v1/profiles?identifier=email:ann@example.com'"
    from_file = local is not None and settings.api_tokens.get_secret_value() == (
        f"{local.api_token.get_secret_value()}=forget")
    if not from_file:
        click.echo("Profile API: send a token of STREAMS_API_TOKENS as "
                   "'Authorization: Bearer <token>'")
        return
    assert local is not None
    made = "made" if local.created else "kept"
    click.echo(f"Profile API token ({made} in {local.path}, mode 0600; scope forget, which "
               "allows read):")
    token = local.api_token.get_secret_value() if show else (
        f"$(python3 -c 'import json; print(json.load(open(\"{local.path}\"))[\"api_token\"])')")
    click.echo(f"  curl -H \"Authorization: Bearer {token}\" {example}")
    if show:
        click.echo(f"  person page: {base}/people?token={token}")
