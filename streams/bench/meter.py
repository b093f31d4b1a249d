"""CPU time per process group, for the bench's "CPU µs per event" figures.

Rates on a shared 2-core machine swing by ×2–3 from day to day; the CPU a process spends
per event moves far less, so every bench figure is reported both ways. A ``CpuMeter``
knows a few named groups of processes (the worker and its fold processes, PostgreSQL's
server processes, the Kafka broker, the bench itself) and takes snapshots of their
user + system CPU seconds; the difference of two snapshots is the CPU each group spent
in between.

A process that starts and exits between two snapshots is not seen (PostgreSQL backends of
short connections); the groups measured here live for the whole window: the worker's
pool connections, its fold processes and the broker.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field

import psutil

from streams.infra.procs import port_owner

# A snapshot: group -> {pid: cpu seconds (user + system) so far}.
Snapshot = dict[str, dict[int, float]]


def _cpu(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
    except psutil.Error:
        return None
    return t.user + t.system


def _tree(root: psutil.Process, *, include_root: bool = True) -> list[psutil.Process]:
    try:
        kids = root.children(recursive=True)
    except psutil.Error:
        kids = []
    return [root, *kids] if include_root else kids


@dataclass
class CpuMeter:
    """Named process groups whose CPU seconds ``snapshot`` reads. Each group is a
    callable returning the group's processes now (a tree may grow, e.g. fold processes
    start after the worker), so a meter outlives the processes it was set up with."""

    groups: dict[str, Callable[[], list[psutil.Process]]] = field(default_factory=dict)

    def snapshot(self) -> Snapshot:
        """CPU seconds of every process of every group, now. Never raises for a process
        that exits meanwhile. Blocks briefly (reads /proc)."""
        out: Snapshot = {}
        for name, members in self.groups.items():
            seen: dict[int, float] = {}
            for proc in members():
                cpu = _cpu(proc)
                if cpu is not None:
                    seen[proc.pid] = cpu
            out[name] = seen
        return out

    @staticmethod
    def spent(before: Snapshot, after: Snapshot) -> dict[str, float]:
        """CPU seconds each group spent between two snapshots. A process only in
        ``after`` counts from zero (it started in the window). Pure."""
        spent: dict[str, float] = {}
        for name, now in after.items():
            then = before.get(name, {})
            spent[name] = sum(cpu - then.get(pid, 0.0) for pid, cpu in now.items())
        return spent

    # --- the usual groups ----------------------------------------------------------------
    def add_tree(self, name: str, pid: int, *, include_root: bool = True) -> None:
        """A process and its descendants (or only the descendants)."""
        def members() -> list[psutil.Process]:
            try:
                root = psutil.Process(pid)
            except psutil.Error:
                return []
            return _tree(root, include_root=include_root)
        self.groups[name] = members

    def add_process(self, name: str, pid: int) -> None:
        """One process alone."""
        def members() -> list[psutil.Process]:
            try:
                return [psutil.Process(pid)]
            except psutil.Error:
                return []
        self.groups[name] = members

    def add_listener(self, name: str, port: int) -> bool:
        """The process listening on ``port`` and its descendants (PostgreSQL's postmaster
        with its backends; the Kafka broker). False when no listener can be seen."""
        owner = port_owner(port)
        if owner is None:
            return False
        self.add_tree(name, owner.pid)
        return True

    def add_self(self, name: str = "bench") -> None:
        """This process (the load generator or consumer the bench itself runs)."""
        self.add_process(name, os.getpid())


def per_event_us(spent: dict[str, float], events: int) -> dict[str, float]:
    """CPU µs per event of each group (``spent`` in seconds). Pure."""
    return {name: secs / events * 1e6 for name, secs in spent.items()} if events else {}
