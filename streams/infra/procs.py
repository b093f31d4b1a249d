"""Small process and port helpers shared by the Kafka and PostgreSQL launchers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import psutil


class InfraError(RuntimeError):
    """A problem bringing up local infrastructure, phrased as one line for the operator."""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port (blocks up to ``timeout``)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_owner(port: int) -> psutil.Process | None:
    """The process listening on a TCP port, when it can be seen."""
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        return None
    for conn in conns:
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            if conn.pid:
                try:
                    return psutil.Process(conn.pid)
                except psutil.NoSuchProcess:
                    return None
    return None


def ensure_port_free(port: int, what: str, setting: str) -> None:
    """Raise InfraError naming the holder when ``port`` is already taken."""
    if not port_open("127.0.0.1", port):
        return
    owner = port_owner(port)
    holder = f"{owner.name()} (pid {owner.pid})" if owner else "another process"
    raise InfraError(
        f"{what}: port {port} is already in use by {holder}; stop it or set {setting} "
        f"to a free port"
    )


def read_pid(pid_file: Path) -> int | None:
    """The pid stored in ``pid_file`` when that process still runs, else None."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
    except psutil.NoSuchProcess:
        return None
    return pid


def stop_pid(pid: int, timeout: float) -> None:
    """SIGTERM a process, wait up to ``timeout`` seconds, then SIGKILL it (blocks)."""
    try:
        proc = psutil.Process(pid)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return
    except psutil.TimeoutExpired:
        try:
            os.kill(pid, signal.SIGKILL)
            psutil.Process(pid).wait(timeout=10)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass


def stop_session(proc: subprocess.Popen, timeout: float = 30) -> None:
    """Stop a child started with ``start_new_session=True``: SIGTERM to it, wait up to
    ``timeout`` seconds, then SIGKILL its whole session (its own children too). Blocks."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)


def wait_until(check, timeout: float, interval: float = 0.25) -> bool:
    """Poll ``check()`` until it returns true or ``timeout`` passes (blocks)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return bool(check())


def tail(path: Path, lines: int = 5) -> str:
    """The last lines of a log file, for error messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
