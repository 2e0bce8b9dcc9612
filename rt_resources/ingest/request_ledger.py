"""Which course contents the sensor has already requested runs for.

Stored next to the drop index, keyed by a *generation* number that the sensor keeps as
its (tiny) cursor. A row written by a tick counts only once that tick's cursor has been
committed by Dagster, so a tick that fails before its runs are submitted is simply
requested again: nothing is lost, and an unchanged course is never requested twice.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path


class RequestLedger:
    def __init__(self, db_path: Path) -> None:
        self.path = Path(db_path)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute(
            "CREATE TABLE IF NOT EXISTS requests (subject TEXT PRIMARY KEY, fingerprint TEXT, generation INTEGER)"
        )
        return con

    def confirmed(self, committed_generation: int) -> dict[str, str]:
        """subject -> fingerprint, for requests of ticks up to ``committed_generation``."""
        con = self._connect()
        try:
            rows = con.execute(
                "SELECT subject, fingerprint FROM requests WHERE generation <= ?", (committed_generation,)
            ).fetchall()
        finally:
            con.close()
        return dict(rows)

    def forget_after(self, committed_generation: int) -> None:
        """Drop the rows of ticks after ``committed_generation``: ticks whose cursor was never
        committed (their runs may never have been submitted). The next tick reuses their
        generation number; without this, its commit would confirm the lost tick's requests too."""
        con = self._connect()
        try:
            with con:
                con.execute("DELETE FROM requests WHERE generation > ?", (committed_generation,))
        finally:
            con.close()

    def record(self, requested: dict[str, str], generation: int) -> None:
        """Remember ``subject -> fingerprint`` as requested by tick ``generation``."""
        if not requested:
            return
        con = self._connect()
        try:
            with con:
                con.executemany(
                    "INSERT OR REPLACE INTO requests (subject, fingerprint, generation) VALUES (?, ?, ?)",
                    [(s, fp, generation) for s, fp in requested.items()],
                )
        finally:
            con.close()
