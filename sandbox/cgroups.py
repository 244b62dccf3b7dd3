"""Read a run's peak memory, CPU time and OOM kills from the kernel's cgroup files.

cgroup v1 (`memory`, `cpuacct` hierarchies) and v2 (unified) are both read. A container's own
cgroup is deleted the moment it stops, so the executor puts each run under a per-run parent
cgroup (which outlives it and counts its children hierarchically) and also samples the
container's own cgroup while it runs; every figure is None where no file could be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

CGROUP_MOUNTS = Path("/proc/self/mountinfo")


@dataclass(frozen=True, slots=True, kw_only=True)
class Usage:
    cpu_time_s: float | None = None
    peak_memory_bytes: int | None = None
    oom_kills: int | None = None

    def merge(self, other: Usage) -> Usage:
        """The larger of each figure (all three only ever grow during a run)."""
        return Usage(
            cpu_time_s=_max(self.cpu_time_s, other.cpu_time_s),
            peak_memory_bytes=_max(self.peak_memory_bytes, other.peak_memory_bytes),
            oom_kills=_max(self.oom_kills, other.oom_kills),
        )


_N = TypeVar("_N", int, float)


def _max(a: _N | None, b: _N | None) -> _N | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


@dataclass(frozen=True, slots=True, kw_only=True)
class CgroupLayout:
    """Where the hierarchies are mounted: v1 per controller, or the v2 unified root."""

    memory_v1: Path | None = None
    cpuacct_v1: Path | None = None
    roots: tuple[Path, ...] = ()  # every hierarchy, v1 and v2 (a run's parent exists in each)
    unified: Path | None = None  # v2 root, only when it carries the controllers

    @classmethod
    def discover(cls, mountinfo: Path = CGROUP_MOUNTS) -> CgroupLayout:
        memory = cpuacct = unified = None
        roots: list[Path] = []
        for line in mountinfo.read_text().splitlines():
            pre, _, post = line.partition(" - ")
            fields, extra = pre.split(), post.split()
            if len(fields) < 5 or len(extra) < 3:
                continue
            point, fstype, options = Path(fields[4]), extra[0], extra[2].split(",")
            if fstype in ("cgroup", "cgroup2"):
                roots.append(point)
            if fstype == "cgroup2" and (point / "cgroup.controllers").exists():
                if "memory" in (point / "cgroup.controllers").read_text().split():
                    unified = point
            elif fstype == "cgroup":
                memory = point if "memory" in options else memory
                cpuacct = point if "cpuacct" in options else cpuacct
        if memory is not None:
            unified = None  # hybrid host: v2 root is controller-less, v1 holds the figures
        return cls(memory_v1=memory, cpuacct_v1=cpuacct, roots=tuple(roots), unified=unified)

    def candidates(self, container_id: str, parent: str | None) -> list[str]:
        """Relative cgroup paths where this container's own cgroup may live."""
        paths = [f"docker/{container_id}", f"system.slice/docker-{container_id}.scope"]
        if parent:
            paths.insert(0, f"{parent.strip('/')}/{container_id}")
        return paths

    def read_run(self, container_id: str, parent: str | None) -> Usage:
        """The best figures known for a run: its parent (which outlives it), then its own."""
        usage = self.read(parent.strip("/")) if parent else Usage()
        for path in self.candidates(container_id, parent):
            usage = usage.merge(self.read(path))
        return usage

    def read(self, relative: str) -> Usage:
        """The figures of one cgroup (relative to the hierarchy roots); None where absent."""
        if self.unified is not None:
            return _read_v2(self.unified / relative)
        usage = Usage()
        if self.memory_v1 is not None:
            usage = _read_v1_memory(self.memory_v1 / relative)
        if self.cpuacct_v1 is not None:
            ns = _read_int(self.cpuacct_v1 / relative / "cpuacct.usage")
            usage = usage.merge(Usage(cpu_time_s=None if ns is None else ns / 1e9))
        return usage

    def remove(self, relative: str) -> bool:
        """rmdir the (empty) cgroup in every hierarchy; True when none is left."""
        gone = True
        for root in self.roots:
            try:
                (root / relative).rmdir()
            except FileNotFoundError:
                pass
            except OSError:  # busy: a process is still inside, or a child cgroup remains
                gone = False
        return gone

    def children(self, relative: str) -> list[str]:
        """Names of the cgroups directly below `relative` (e.g. per-run parents)."""
        root = self.unified or self.memory_v1
        if root is None or not (root / relative).is_dir():
            return []
        return sorted(p.name for p in (root / relative).iterdir() if p.is_dir())


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _read_keyed(path: Path, key: str) -> int | None:
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        name, _, value = line.partition(" ")
        if name == key and value.strip().isdigit():
            return int(value)
    return None


def _read_v1_memory(cgroup: Path) -> Usage:
    return Usage(
        peak_memory_bytes=_read_int(cgroup / "memory.max_usage_in_bytes"),
        oom_kills=_read_keyed(cgroup / "memory.oom_control", "oom_kill"),
    )


def _read_v2(cgroup: Path) -> Usage:
    usec = _read_keyed(cgroup / "cpu.stat", "usage_usec")
    return Usage(
        cpu_time_s=None if usec is None else usec / 1e6,
        peak_memory_bytes=_read_int(cgroup / "memory.peak"),
        oom_kills=_read_keyed(cgroup / "memory.events", "oom_kill"),
    )
