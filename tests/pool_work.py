"""Picklable work functions for the pool tests (no pytest import: spawned workers import this)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def square(x: int) -> int:
    return x * x


@dataclass(frozen=True)
class RecordOrder:
    """Appends each item to ``log`` as it starts, then returns it."""

    log: Path

    def __call__(self, x: int) -> int:
        with open(self.log, "a") as fh:
            fh.write(f"{x}\n")
        return x


@dataclass(frozen=True)
class FailOn:
    """Raises for ``bad``; kills its worker once for ``kill`` (marker file)."""

    bad: int
    kill: int
    marker: Path

    def __call__(self, x: int) -> int:
        if x == self.bad:
            raise ValueError(f"bad item {x}")
        if x == self.kill and not self.marker.exists():
            self.marker.touch()
            os._exit(9)
        return -x


def sleep_and_record_pid(pid_file: str) -> None:
    """Write this worker's pid, then work for a long time (the parent is killed meanwhile)."""
    import time

    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(300)
