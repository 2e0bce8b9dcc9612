"""How many workers the process pool may run, from free memory (see :mod:`rt_resources.parallel`).

The pool starts at ``min(workers, (available memory - reserve) / peak per worker)``; every finished
task reports its worker's peak RSS (``VmHWM``, reset before each task) and the pool re-measures:
fewer tasks in flight when memory gets scarce, and after a halving it grows back once at least one
worker's peak of memory has freed. Available memory is the host's, or less under a cgroup v2 limit.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def pool_logger(label: str) -> logging.Logger:
    """Log lines go to ``rtpipeline.<label>`` (e.g. ``rtpipeline.radiomics``)."""
    return logging.getLogger(f"rtpipeline.{label}")


GIB = 2**30
#: a worker's expected peak before any task is measured, for callers without a hint: a spawned
#: worker with numpy, SimpleITK and a course image loaded
DEFAULT_PEAK_HINT_BYTES = 512 * 2**20


@dataclass(frozen=True)
class MemoryPolicy:
    """How the pool sizes itself from free memory (module docstring)."""

    enabled: bool = True
    #: a worker's expected peak RSS until one is measured (None: :data:`DEFAULT_PEAK_HINT_BYTES`)
    peak_hint_bytes: int | None = None
    #: memory left to the parent and the OS (None: 5 % of the machine's memory, at least 512 MiB)
    reserve_bytes: int | None = None


def _cgroup_headroom_bytes() -> int | None:
    """Memory left under this process's cgroup v2 limit (page cache that can be dropped counts as
    free), or None without a limit."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        if limit == "max":
            return None
        current = int((root / "memory.current").read_text())
        stat = dict(line.split() for line in (root / "memory.stat").read_text().splitlines() if " " in line)
        return max(0, int(limit) - current + int(stat.get("inactive_file", 0)))
    except (OSError, ValueError):
        return None


def available_memory_bytes() -> int:
    """Memory new work may still use: the host's available memory, or less under a cgroup limit."""
    import psutil

    available = int(psutil.virtual_memory().available)
    headroom = _cgroup_headroom_bytes()
    return available if headroom is None else min(available, headroom)


def reset_peak_rss() -> None:
    """Reset this process's peak RSS (``VmHWM``) to its current RSS (Linux; ignored elsewhere)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def peak_rss_bytes() -> int:
    """This process's peak RSS since the last reset (``VmHWM``), else since it started."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@dataclass(frozen=True)
class Measured:
    """A worker's result and its peak RSS while computing it."""

    value: Any
    peak_bytes: int


def pool_rss_bytes(pool: ProcessPoolExecutor) -> int:
    """Resident memory of the pool's live worker processes."""
    import psutil

    total = 0
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public API in 3.11
        try:
            total += psutil.Process(proc.pid).memory_info().rss
        except (psutil.Error, ValueError):
            pass
    return total


def _gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


class PoolSizer:
    """How many tasks may be in flight: ``requested`` at most, as many as free memory holds at the
    measured peak per worker, and no more than a halving left until memory frees again."""

    def __init__(self, requested: int, memory: MemoryPolicy, label: str) -> None:
        import psutil

        self.requested = max(1, int(requested))
        self.enabled = memory.enabled
        self.label = label
        self.hint = int(memory.peak_hint_bytes or DEFAULT_PEAK_HINT_BYTES)
        total = int(psutil.virtual_memory().total)
        self.reserve = int(memory.reserve_bytes if memory.reserve_bytes is not None else max(512 * 2**20, total // 20))
        self.peaks: deque[int] = deque(maxlen=max(2, self.requested))  # the latest tasks' peaks
        self.ceiling = self.requested  # lowered by a halving, raised again once memory frees
        self.halved_at: int | None = None  # available memory right after the last halving
        self.limit = self.requested
        self.sizing: list[str] = []

    def peak(self) -> tuple[int, str]:
        if self.peaks:
            return max(self.peaks), f"measured, largest of the last {len(self.peaks)} task(s)"
        return self.hint, "hint, nothing measured yet"

    def memory_workers(self, available: int, pool_rss: int) -> int:
        """Workers the memory holds: what is available plus what the pool's workers hold now, less
        the reserve, over the peak per worker (at least 1)."""
        return max(1, (available + pool_rss - self.reserve) // self.peak()[0])

    def start(self) -> dict[str, Any]:
        """Size the first wave and log the decision."""
        cores = os.cpu_count() or 1
        available = available_memory_bytes() if self.enabled else 0
        peak, source = self.peak()
        fit = self.memory_workers(available, 0) if self.enabled else self.requested
        self.limit = min(self.requested, fit)
        config = {
            "cpu_cores": cores,
            "requested_workers": self.requested,
            "available_memory_bytes": available,
            "reserve_bytes": self.reserve,
            "peak_per_worker_bytes": peak,
            "peak_source": source,
            "memory_workers": fit,
            "start_workers": self.limit,
            "memory_sizing": self.enabled,
        }
        memory = (
            f"  available memory   {_gib(available)} (reserve {_gib(self.reserve)} for the parent and OS)\n"
            f"  peak per worker    {_gib(peak)} ({source})\n"
            f"  memory allows      {fit} workers\n"
            if self.enabled
            else "  memory sizing      off\n"
        )
        pool_logger(self.label).info(
            "Parallelization Configuration (%s)\n"
            "  CPU cores          %d\n"
            "  requested workers  %d (cores - 1 unless set: --workers, RT_POOL_WORKERS)\n"
            "%s"
            "  starting workers   %d = min(requested %d, memory %d)\n"
            "  threads per worker 1 (BLAS, OpenMP, ITK)\n"
            "  re-measured        after every task: the worker's peak RSS and free memory; a pool cut by a\n"
            "                     fault grows back once a worker's peak of memory has freed",
            self.label, cores, self.requested, memory, self.limit, self.requested, fit,
        )  # fmt: skip
        return config

    def measured(self, peak_bytes: int) -> None:
        if peak_bytes > 0:
            self.peaks.append(int(peak_bytes))

    def resize(self, pool_rss: int) -> None:
        """Re-measure after a task finished: follow free memory, grow back after a halving."""
        if not self.enabled:
            return
        available = available_memory_bytes()
        fit = self.memory_workers(available, pool_rss)
        peak, source = self.peak()
        if self.ceiling < self.requested and self.halved_at is not None:
            freed = available - self.halved_at
            if freed >= max(peak, self.reserve) and fit > self.ceiling:
                grown = min(self.requested, fit)
                self._note(
                    f"{_gib(freed)} of memory freed since the halving; growing back {self.ceiling} -> {grown} workers"
                )
                self.ceiling, self.halved_at = grown, available
        target = min(self.ceiling, fit)
        if target != self.limit:
            self._note(
                f"memory re-measured ({_gib(available)} available, peak per worker {_gib(peak)}, {source}): "
                f"workers {self.limit} -> {target}"
            )
            self.limit = target

    def halve(self) -> tuple[int, int]:
        """After a fault: half the workers (at least 1) until memory frees. Returns (before, after)."""
        before = self.limit
        self.limit = self.ceiling = max(1, before // 2)
        self.halved_at = available_memory_bytes() if self.enabled else None
        return before, self.limit

    def _note(self, message: str) -> None:
        self.sizing.append(message)
        pool_logger(self.label).info("%s: %s", self.label, message)
