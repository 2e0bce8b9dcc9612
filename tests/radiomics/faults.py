"""Picklable fault hooks for the pool tests (kept free of pytest so spawned workers import it cheaply)."""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class FaultOnce:
    """On the first attempt (across processes: a marker file) for ``roi``: SIGKILL, MemoryError or a hang."""

    roi: str
    marker_dir: Path
    kind: str  # "kill", "memory" or "hang"

    def __call__(self, task, attempt: int) -> None:
        if task.roi_name != self.roi:
            return
        marker = Path(self.marker_dir) / f"{self.kind}-{self.roi}"
        try:
            marker.touch(exist_ok=False)
        except FileExistsError:
            return
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "hang":
            time.sleep(60)
        raise MemoryError(f"synthetic MemoryError for {self.roi}")


@dataclass(frozen=True)
class AlwaysFail:
    """Every attempt for ``roi`` raises; each attempt is logged as a line in ``log_file``."""

    roi: str
    log_file: Path

    def __call__(self, task, attempt: int) -> None:
        if task.roi_name == self.roi:
            with open(self.log_file, "a") as fh:
                fh.write(f"{attempt}\n")
            raise RuntimeError(f"synthetic failure for {self.roi}")
