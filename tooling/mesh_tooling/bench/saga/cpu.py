"""CPU seconds per process group over a phase of ``mesh bench saga`` (from ``/proc``), and
what the rest of the machine spent meanwhile."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def _ticks(pid: int) -> int:
    """User + system CPU ticks of ``pid`` so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[11]) + int(fields[12])


def _machine_ticks() -> int:
    """CPU ticks the whole machine spent busy (neither idle nor waiting for I/O)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(values[:8]) - values[3] - values[4]


def listener_pid(port: int) -> int | None:
    """The process listening on TCP ``port`` on this machine, if it can be found."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{cols[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (proc / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in inodes:
                        return int(proc.name)
    return None


def _label(pid: int) -> str:
    """A short name for a process: its command without paths (``pytest -q``,
    ``python -m mesh worker``, ``postgres: postgres dictamesh idle``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "(gone)"
    words = " ".join(argv).split()
    if not words:
        return "(kernel)"
    words[0] = words[0].rsplit("/", 1)[-1]
    if words[0].startswith("python") and len(words) > 1 and words[1] != "-m":
        words = [words[1].rsplit("/", 1)[-1], *words[2:]]
    return " ".join(words[:4])[:48]


def postgres_backends(database: str) -> list[int]:
    """The Postgres backends serving ``database`` (by their process titles)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            with contextlib.suppress(OSError):
                title = (proc / "cmdline").read_bytes().split(b"\0", 1)[0].decode(errors="replace")
                # "postgres: [cluster: ]user database host(port) state"
                if title.startswith("postgres: ") and database in title.split()[1:5]:
                    found.append(int(proc.name))
    return found


def _all_ticks() -> dict[int, int]:
    return {int(p.name): _ticks(int(p.name)) for p in Path("/proc").iterdir() if p.name.isdigit()}


@dataclass
class _CpuSample:
    started: float
    machine: int
    ticks: dict[int, int]


class CpuMeter:
    """CPU seconds per process group between :meth:`start` and :meth:`stop`, and what the
    rest of the machine spent (``other``, its biggest consumers by command)."""

    def __init__(self, groups: Callable[[], dict[str, list[int]]]) -> None:
        self.groups = groups
        self.hz = os.sysconf("SC_CLK_TCK")

    def start(self) -> _CpuSample:
        return _CpuSample(time.monotonic(), _machine_ticks(), _all_ticks())

    def stop(self, sample: _CpuSample) -> tuple[dict[str, float], list[tuple[str, float]]]:
        """CPU seconds per group, ``other``, ``machine`` and ``wall``; and the other
        processes' CPU seconds by command, most first."""
        now = _all_ticks()
        machine = (_machine_ticks() - sample.machine) / self.hz
        delta = {pid: max(0, t - sample.ticks.get(pid, 0)) for pid, t in now.items()}
        out: dict[str, float] = {}
        for name, pids in self.groups().items():
            out[name] = sum(delta.pop(pid, 0) for pid in set(pids)) / self.hz
        others: dict[str, float] = {}
        for pid, ticks in delta.items():
            if ticks:
                label = _label(pid)
                others[label] = others.get(label, 0.0) + ticks / self.hz
        out["other"] = max(0.0, machine - sum(out.values()))
        out["machine"] = machine
        out["wall"] = time.monotonic() - sample.started
        return out, sorted(others.items(), key=lambda item: -item[1])
