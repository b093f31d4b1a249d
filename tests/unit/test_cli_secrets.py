"""No command prints a secret when a setting is bad or a service cannot be reached, and
`streams serve` refuses to expose people's data or public write keys beyond loopback.

Each case runs the real command line in a child process (what a user sees, tracebacks
included); the cases run side by side to keep the test quick.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

SECRETS = ("hunter2", "sk_live_wk_77", "api_tok_secret_9", "ops_tok_secret_3",
           "forget_key_secret_0123")
BASE = {
    "STREAMS_WRITE_KEYS": "sk_live_wk_77=web",
    "STREAMS_API_TOKENS": "api_tok_secret_9=forget",
    "STREAMS_OPS_TOKEN": "ops_tok_secret_3",
    "STREAMS_FORGET_KEY": "forget_key_secret_0123",
    # Nothing here may reach the session's services.
    "STREAMS_KAFKA_BOOTSTRAP": "127.0.0.1:1",
}
BAD_SETTINGS = {
    # settings that do not validate
    "bad port": {"STREAMS_DATABASE_URL": "postgresql+psycopg://u:hunter2@h:99999/db"},
    "not postgresql": {"STREAMS_DATABASE_URL": "mysql://u:hunter2@h/db"},
    "other setting bad": {"STREAMS_DATABASE_URL": "postgresql+psycopg://u:hunter2@h/db",
                          "STREAMS_HTTP_PORT": "x"},
    "bad token entry": {"STREAMS_DATABASE_URL": "postgresql+psycopg://u:hunter2@h/db",
                        "STREAMS_API_TOKENS": "api_tok_secret_9=root"},
    # valid settings, a database that cannot be reached
    "unknown host": {"STREAMS_DATABASE_URL": "postgresql+psycopg://u:hunter2@h/db?bad"},
    "nothing listening": {"STREAMS_DATABASE_URL":
                          "postgresql+psycopg://u:hunter2@127.0.0.1:1/db"},
}
COMMANDS = {
    "profile get": ["profile", "get", "email:ann@example.com"],
    "rebuild": ["rebuild"],
    "db upgrade": ["db", "upgrade"],
}


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMS_")}
    return {**env, **BASE, **extra, "PYTHONUNBUFFERED": "1"}


def _run_all(cases: dict[str, tuple[list[str], dict[str, str]]]
             ) -> dict[str, tuple[int, str]]:
    procs = {name: subprocess.Popen([sys.executable, "-m", "streams", *argv], env=_env(env),
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True)
             for name, (argv, env) in cases.items()}
    results = {}
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=120)
        results[name] = (proc.returncode, out)
    return results


def test_no_command_prints_a_secret_on_a_bad_setting_or_an_unreachable_database():
    cases = {f"{c} / {b}": (argv, env) for c, argv in COMMANDS.items()
             for b, env in BAD_SETTINGS.items()
             # db upgrade and rebuild take the same paths as profile get for most cases
             # (the settings' own tests cover more bad URLs, in process)
             if c == "profile get" or b in ("bad port", "unknown host")}
    # A command that reads the settings itself (not through settings_or_exit), with a
    # password long enough for pydantic to cut it short in its own error text.
    long_password = "postgresql+psycopg://u:hunter2" + "x" * 40 + "@h:99999/db"
    cases["bench collector / long password"] = (
        ["bench", "collector"], {"STREAMS_DATABASE_URL": long_password})
    results = _run_all(cases)
    for name, (code, out) in results.items():
        assert code != 0, f"{name}: exited 0\n{out}"
        leaked = [s for s in SECRETS if s in out]
        assert not leaked, f"{name}: printed {leaked}\n{out}"
        assert "error" in out.lower(), f"{name}: no error named\n{out}"
    # A bad value is named by its variable, in one line, with no traceback.
    code, out = results["profile get / bad port"]
    assert code == 2 and "STREAMS_DATABASE_URL" in out and "Traceback" not in out
    code, out = results["profile get / unknown host"]
    assert code == 1 and "database error" in out and "Traceback" not in out


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ({}, "built-in demo keys"),
        ({"STREAMS_WRITE_KEYS": "own_key_77=web", "STREAMS_API_TOKENS": ""},
         "set STREAMS_API_TOKENS"),
    ],
)
def test_serve_beyond_loopback_refuses_to_start(extra, fragment):
    full = _env({"STREAMS_HTTP_HOST": "0.0.0.0", **extra})
    if "STREAMS_WRITE_KEYS" not in extra:
        full.pop("STREAMS_WRITE_KEYS")  # the built-in demo keys
    out = subprocess.run([sys.executable, "-m", "streams", "serve"], env=full,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stdout + out.stderr
    assert fragment in out.stderr and "STREAMS_HTTP_HOST=0.0.0.0" in out.stderr
    assert not [s for s in SECRETS if s in out.stdout + out.stderr]
