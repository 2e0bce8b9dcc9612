"""Staging of received DICOM: one folder per association, promoted into the drop when it is complete.

Layout, all under the drop folder so that every move is a rename on one file system::

    DROP/.rtpipeline-receive/            the receiver's own folder, never indexed
        staging/<calling AE>/<assoc id>/  an association in progress, or one that was aborted
            <SOP Instance UID>.dcm
        receive_log.jsonl                 one JSON line per released, aborted, refused or stale event
    DROP/<calling AE>/<assoc id>/         a released association: its files and a _COMPLETE marker

Every instance is written to a temporary name, flushed with ``fsync`` and renamed to
``<SOP Instance UID>.dcm``, so no file in staging is ever half-written. A released association's
staging folder is fsync'd, gets its ``_COMPLETE`` marker and is renamed into the drop as a whole:
the drop sensor sees all of it at once, or nothing. An aborted association is never promoted; its
folder stays in staging (nothing is deleted) and is reported once it is older than ``stale_after_s``.

Names never come from free text: the association folder is a UTC timestamp plus random hex, the
calling AE title is reduced to ``[A-Za-z0-9_-]``, and a SOP Instance UID is used as a file name
only when it is a valid UID (digits and dots, PS3.5 section 9.1), which excludes ``/`` and ``..``.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rt_resources.ingest.index import COMPLETE_MARKER, RECEIVER_FOLDER

log = logging.getLogger(__name__)

STAGING = "staging"
LOG_FILE = "receive_log.jsonl"
SUFFIX = ".dcm"
#: PS3.5 9.1: a UID is at most 64 characters, components of digits separated by single dots
MAX_UID_LENGTH = 64
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
_AE_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
#: errors that mean "no space": the disk, or the user's quota
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class ReceiveError(Exception):
    """The receiver cannot do what it was asked; the message names the folder, file, AE or UID."""


class UnsafeUIDError(ReceiveError):
    """A SOP Instance UID that is not a valid UID, so it is never used as a file name."""


def is_valid_uid(uid: str) -> bool:
    """``True`` for a UID as PS3.5 9.1 defines it: digits and single dots, at most 64 characters.

    Leading zeros in a component are tolerated (seen in real exports); anything that could
    leave a folder (``/``, ``\\``, ``..``) or hide a file (a leading dot) is not a UID."""
    return 0 < len(uid) <= MAX_UID_LENGTH and _UID.fullmatch(uid) is not None


def sanitize_ae_title(ae_title: str) -> str:
    """The calling AE title as a folder name: spaces trimmed, every character outside
    ``[A-Za-z0-9_-]`` replaced by ``_`` (so no ``/``, no ``..``, no hidden folder)."""
    cleaned = _AE_UNSAFE.sub("_", ae_title.strip())
    return cleaned or "UNKNOWN_AE"


def new_association_id(now: float | None = None) -> str:
    """A unique, sortable association id: UTC time to the millisecond plus 6 random hex digits,
    e.g. ``20261201T101502.123Z-a1b2c3``."""
    now = time.time() if now is None else now
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(now))
    return f"{stamp}.{int(now * 1000) % 1000:03d}Z-{secrets.token_hex(3)}"


def _write_bytes(fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd`` (the one place bytes reach the disk; tests make it fail)."""
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass
class StagedAssociation:
    """One association's files in staging."""

    assoc_id: str
    calling_ae: str  #: as sent (for logs)
    peer: str  #: "host:port" of the sender
    folder: Path  #: staging/<AE>/<assoc id>
    destination: Path  #: DROP/<AE>/<assoc id>
    started_at: float
    stored: int = 0  #: instances written
    failed: int = 0  #: instances refused or not written
    finished: bool = False  #: released or aborted (set once)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def describe(self) -> str:
        return f"association {self.assoc_id} from AE {self.calling_ae!r} at {self.peer}"


@dataclass
class StaleAssociation:
    """A staging folder nobody finished: an association that was aborted, or a receiver that died."""

    folder: Path
    files: int
    bytes: int
    age_s: float  #: since its newest file was written

    def as_record(self, drop: Path) -> dict[str, Any]:
        return {
            "staging": self.folder.relative_to(drop).as_posix(),
            "files": self.files,
            "bytes": self.bytes,
            "age_h": round(self.age_s / 3600, 2),
        }


class StagingArea:
    """The receiver's staging folder and log inside one drop folder."""

    def __init__(self, drop: Path) -> None:
        self.drop = Path(drop).resolve()
        self.root = self.drop / RECEIVER_FOLDER
        self.staging = self.root / STAGING
        self.log_path = self.root / LOG_FILE
        self._log_lock = threading.Lock()

    def prepare(self) -> None:
        """Create the staging folder; refuse a drop that is missing or a staging folder on another
        file system (a promotion must be a rename, never a copy)."""
        if not self.drop.is_dir():
            raise ReceiveError(f"drop folder {self.drop} does not exist or is not a folder")
        try:
            self.staging.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ReceiveError(f"cannot create the staging folder {self.staging}: {exc.strerror or exc}") from exc
        if os.stat(self.staging).st_dev != os.stat(self.drop).st_dev:
            raise ReceiveError(
                f"staging folder {self.staging} is on another file system than the drop {self.drop}: "
                "remove the mount there, promotions must be renames"
            )

    def begin(self, calling_ae: str, peer: str, now: float | None = None) -> StagedAssociation:
        """A new association's staging (its folder is created with its first instance)."""
        now = time.time() if now is None else now
        assoc_id = new_association_id(now)
        ae_folder = sanitize_ae_title(calling_ae)
        return StagedAssociation(
            assoc_id=assoc_id,
            calling_ae=calling_ae.strip(),
            peer=peer,
            folder=self.staging / ae_folder / assoc_id,
            destination=self.drop / ae_folder / assoc_id,
            started_at=now,
        )

    def write_instance(self, staged: StagedAssociation, sop_instance_uid: str, data: bytes) -> Path:
        """Write one instance as ``<SOP Instance UID>.dcm`` in the association's staging folder:
        temporary name, ``fsync``, rename. On any error the temporary file is removed and the
        ``OSError`` raised; an invalid UID raises :class:`UnsafeUIDError` before anything is written."""
        if not is_valid_uid(sop_instance_uid):
            raise UnsafeUIDError(
                f"SOP Instance UID {sop_instance_uid!r} from {staged.describe()} is not a valid UID "
                "(digits and dots, at most 64 characters; PS3.5 9.1): not written"
            )
        staged.folder.mkdir(parents=True, exist_ok=True)
        target = staged.folder / f"{sop_instance_uid}{SUFFIX}"
        tmp = staged.folder / f".{sop_instance_uid}.{secrets.token_hex(4)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # the process umask decides
            try:
                _write_bytes(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return target

    def promote(self, staged: StagedAssociation, complete: bool) -> Path:
        """Move a released association's folder into the drop (one rename), with a ``_COMPLETE``
        marker when ``complete``. The staging folder and the marker are fsync'd first, so the
        drop never shows a folder whose files are not on disk."""
        if complete:
            marker = staged.folder / COMPLETE_MARKER
            fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(staged.folder)
        staged.destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(staged.folder, staged.destination)
        _fsync_dir(staged.destination.parent)
        _fsync_dir(staged.folder.parent)
        return staged.destination

    def discard_if_empty(self, staged: StagedAssociation) -> None:
        """Remove an association's staging folder when no instance was written to it."""
        if staged.folder.is_dir() and not any(staged.folder.iterdir()):
            staged.folder.rmdir()

    def stale(self, stale_after_s: float, active: set[Path], now: float | None = None) -> list[StaleAssociation]:
        """Staging folders of no live association whose newest file is older than ``stale_after_s``."""
        now = time.time() if now is None else now
        found = []
        for folder in self.folders():
            if folder in active:
                continue
            try:
                stats = [p.stat() for p in folder.iterdir() if p.is_file()]
                newest = max([s.st_mtime for s in stats] + [folder.stat().st_mtime])
            except FileNotFoundError:  # promoted (moved) while we looked
                continue
            age_s = now - newest
            if age_s >= stale_after_s:
                found.append(StaleAssociation(folder, len(stats), sum(s.st_size for s in stats), age_s))
        return found

    def folders(self) -> list[Path]:
        """Every association folder in staging, oldest id first."""
        if not self.staging.is_dir():
            return []
        return sorted(
            (f for ae in self.staging.iterdir() if ae.is_dir() for f in ae.iterdir() if f.is_dir()),
            key=lambda f: f.name,
        )

    def record(self, event: str, **fields: Any) -> None:
        """Append one JSON line to the receiver's log (``receive_log.jsonl``); a log that cannot be
        written is said once in the process log, never fatal."""
        line = json.dumps({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "event": event, **fields})
        with self._log_lock:
            try:
                with open(self.log_path, "a", encoding="utf-8") as fh:
                    fh.write(line + "\n")
            except OSError as exc:
                log.error("cannot append to the receive log %s: %s (%s)", self.log_path, exc.strerror or exc, line)

    def free_bytes(self) -> int:
        """Free space on the drop's file system (for the start-up line)."""
        return shutil.disk_usage(self.drop).free
