"""Picklable work functions for the pool-sizing tests (no pytest import: spawned workers import this)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Allocate:
    """Touches ``mb`` MiB (so they count in the worker's RSS), frees them, returns the item."""

    mb: int

    def __call__(self, x: int) -> int:
        block = bytearray(self.mb * 2**20)
        block[::4096] = b"\x01" * len(block[::4096])  # touch every page
        del block
        return x


@dataclass(frozen=True)
class KillOnce:
    """Kills its worker the first time it sees ``item`` (a marker file across processes)."""

    item: int
    marker: Path

    def __call__(self, x: int) -> int:
        if x == self.item and not self.marker.exists():
            self.marker.touch()
            os._exit(9)
        return x
