"""CPU and memory of processes, read from /proc (Linux), for the benchmarks."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def peak_rss_mb(pid: int) -> float:
    """A process's peak resident memory so far (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int, stat: str = "") -> float:
    """User + system CPU time of a process and of its reaped children (``stat``: another
    stat file, a thread's ``/proc/PID/task/TID/stat``)."""
    fields = Path(stat or f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")  # utime stime cutime cstime


def children(pid: int) -> list[int]:
    """A process's live child processes (Linux 3.5+: ``/proc/PID/task/TID/children``)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found.extend(int(c) for c in (task / "children").read_text().split())
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def descendants(pid: int) -> list[int]:
    """Children, grandchildren … of a process that are alive now."""
    out: list[int] = []
    todo = children(pid)
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(children(child))
    return out


class BackendCpu:
    """CPU of the PostgreSQL backends serving one database, sampled while the work runs
    (call :meth:`sample` every so often; a backend counts from the first sample, or from 0
    when it started later, up to the last sample it was seen in)."""

    def __init__(self, admin: Any, dbname: str) -> None:
        self.admin = admin
        self.dbname = dbname
        self.first: dict[int, float] = {}
        self.last: dict[int, float] = {}
        self.sample(first=True)

    def sample(self, first: bool = False) -> None:
        import sqlalchemy as sa

        with self.admin.connect() as conn:
            pids = conn.execute(
                sa.text("SELECT pid FROM pg_stat_activity WHERE datname = :d AND pid <> pg_backend_pid()"),
                {"d": self.dbname},
            ).scalars()
            for pid in pids:
                try:
                    now = cpu_seconds(pid)
                except (FileNotFoundError, ProcessLookupError):
                    continue
                self.first.setdefault(pid, now if first else 0.0)
                self.last[pid] = now

    def total(self) -> float:
        return sum(self.last[pid] - self.first[pid] for pid in self.last)
