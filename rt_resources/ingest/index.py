"""Incremental index of a DICOM drop folder, persisted in the data root.

One walk of the drop per scan: every file is ``stat``-ed, and only files that are new
or whose size or mtime changed are read (once: hashed and header-parsed, never pixel
decoded). The index is a SQLite file under ``<data_root>/index/`` so the sensor, the
CLI and asset steps share it across processes. The drop folder is only ever read.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rt_resources.dicom.header import HeaderError, HeaderRecord, read_header, sha256_bytes

#: a file of this name in a drop folder says "this folder is complete": skip the quiet period
COMPLETE_MARKER = "_COMPLETE"
#: the DICOM receiver's own folder at the drop root (staging of associations in progress or aborted,
#: its log); never indexed: what is there is not complete (see :mod:`rt_resources.receive`)
RECEIVER_FOLDER = ".rtpipeline-receive"

_COLUMNS = (
    "path size mtime_ns seen_at sha256 error kind sop_class_uid sop_instance_uid modality "
    "patient_id patient_name study_uid series_uid for_uid info"
).split()


@dataclass
class FileEntry:
    """One file of the drop as the index knows it."""

    path: str  #: POSIX path relative to the drop root
    size: int
    mtime_ns: int
    seen_at: float  #: epoch seconds when a scan first saw this version of the file
    sha256: str
    header: HeaderRecord | None  #: None when the file is not usable
    error: str | None = None  #: why the file is not usable

    @property
    def ok(self) -> bool:
        return self.header is not None


@dataclass
class ScanResult:
    """Outcome of one scan: every file of the drop, and what the scan had to do."""

    drop_root: Path
    entries: list[FileEntry]
    complete_dirs: set[str] = field(default_factory=set)  #: relative dirs holding a marker
    n_parsed: int = 0
    n_removed: int = 0
    seconds: float = 0.0


def index_path_for(index_dir: Path, drop_root: Path) -> Path:
    """The SQLite file that indexes ``drop_root`` (one per drop folder)."""
    digest = hashlib.sha256(str(drop_root.resolve()).encode()).hexdigest()[:12]
    return index_dir / f"drop-{digest}.sqlite"


def walk_drop(drop_root: Path) -> tuple[list[tuple[str, int, int]], set[str]]:
    """List ``(relative path, size, mtime_ns)`` of every regular file, and marker folders.

    Symbolic links to folders are not followed (no loops); hidden folders are walked, except the
    receiver's staging folder at the drop root (:data:`RECEIVER_FOLDER`).
    """
    files: list[tuple[str, int, int]] = []
    markers: set[str] = set()
    stack = [drop_root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                if not (folder == drop_root and entry.name == RECEIVER_FOLDER):
                    stack.append(Path(entry.path))
                continue
            if not entry.is_file():
                continue
            rel = Path(entry.path).relative_to(drop_root).as_posix()
            if entry.name == COMPLETE_MARKER:
                markers.add(str(Path(rel).parent.as_posix()))
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            files.append((rel, st.st_size, st.st_mtime_ns))
    files.sort()
    return files, markers


def read_entry(drop_root: Path, rel: str, size: int, mtime_ns: int, now: float) -> FileEntry:
    """Read one file once: hash its bytes and parse its header."""
    try:
        data = (drop_root / rel).read_bytes()
    except OSError as exc:
        return FileEntry(rel, size, mtime_ns, now, "", None, f"cannot read file: {exc.strerror or exc}")
    digest = sha256_bytes(data)
    try:
        header = read_header(data)
    except HeaderError as exc:
        return FileEntry(rel, size, mtime_ns, now, digest, None, str(exc))
    return FileEntry(rel, size, mtime_ns, now, digest, header, None)


#: read files in parallel processes once at least this many need parsing (a cold scan)
PARALLEL_MIN_FILES = 400


def _read_batch(drop_root: Path, batch: list[tuple[str, int, int]], now: float) -> list[FileEntry]:
    return [read_entry(drop_root, rel, size, mtime_ns, now) for rel, size, mtime_ns in batch]


def read_entries(
    drop_root: Path, files: list[tuple[str, int, int]], now: float, workers: int | None = None
) -> list[FileEntry]:
    """Read ``files`` (in order); across ``workers`` processes when there are many.

    ``workers`` defaults to the CPU count (at most 8). Header parsing is CPU-bound Python,
    so processes, not threads; small batches (an incremental scan) stay in process.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(files) < PARALLEL_MIN_FILES:
        return _read_batch(drop_root, files, now)
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    size = max(50, len(files) // (workers * 4))
    batches = [files[i : i + size] for i in range(0, len(files), size)]
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        results = pool.map(_read_batch, [drop_root] * len(batches), batches, [now] * len(batches))
        return [entry for batch in results for entry in batch]


class DropIndex:
    """The persisted, incremental index of one drop folder."""

    def __init__(self, index_dir: Path, drop_root: Path, workers: int | None = None) -> None:
        self.drop_root = Path(drop_root)
        self.path = index_path_for(Path(index_dir), self.drop_root)
        self.workers = workers

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, seen_at REAL, sha256 TEXT, error TEXT, kind TEXT, "
            "sop_class_uid TEXT, sop_instance_uid TEXT, modality TEXT, patient_id TEXT, "
            "patient_name TEXT, study_uid TEXT, series_uid TEXT, for_uid TEXT, info TEXT)"
        )
        return con

    def load(self) -> dict[str, FileEntry]:
        """Every entry currently stored, by relative path."""
        con = self._connect()
        try:
            rows = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM files").fetchall()
        finally:
            con.close()
        return {row[0]: _from_row(row) for row in rows}

    def identifiers(self, paths: list[str]) -> set[str]:
        """The PatientIDs and PatientNames recorded for these drop-relative paths (to scrub them
        from what leaves the data root; see :mod:`rt_resources.privacy`)."""
        if not self.path.exists() or not paths:
            return set()
        con = self._connect()
        found: set[str] = set()
        try:
            for start in range(0, len(paths), 500):
                chunk = paths[start : start + 500]
                rows = con.execute(
                    f"SELECT DISTINCT patient_id, patient_name FROM files WHERE path IN ({','.join('?' * len(chunk))})",
                    chunk,
                ).fetchall()
                found |= {v for row in rows for v in row if v}
        finally:
            con.close()
        return found

    def scan(self, now: float | None = None) -> ScanResult:
        """Walk the drop, parse what is new or changed, persist, and return every entry."""
        start = time.perf_counter()
        now = time.time() if now is None else now
        if not self.drop_root.is_dir():
            raise FileNotFoundError(f"drop folder {self.drop_root} does not exist or is not a folder")
        files, markers = walk_drop(self.drop_root)
        known = self.load()
        unchanged: list[FileEntry] = []
        to_read: list[tuple[str, int, int]] = []
        for rel, size, mtime_ns in files:
            old = known.pop(rel, None)
            if old is not None and old.size == size and old.mtime_ns == mtime_ns:
                unchanged.append(old)
            else:
                to_read.append((rel, size, mtime_ns))
        changed = read_entries(self.drop_root, to_read, now, self.workers)
        entries = sorted(unchanged + changed, key=lambda e: e.path)
        removed = list(known)
        if changed or removed:
            con = self._connect()
            try:
                with con:
                    con.executemany(
                        f"INSERT OR REPLACE INTO files ({', '.join(_COLUMNS)}) "
                        f"VALUES ({', '.join('?' * len(_COLUMNS))})",
                        [_to_row(e) for e in changed],
                    )
                    con.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in removed])
            finally:
                con.close()
        return ScanResult(
            drop_root=self.drop_root,
            entries=entries,
            complete_dirs=markers,
            n_parsed=len(changed),
            n_removed=len(removed),
            seconds=time.perf_counter() - start,
        )


def iter_ancestors(rel_path: str) -> Iterator[str]:
    """Relative folders containing ``rel_path``, nearest first, ending with ``"."``."""
    parent = Path(rel_path).parent
    while True:
        yield parent.as_posix()
        if parent == Path("."):
            return
        parent = parent.parent


def _to_row(e: FileEntry) -> tuple:
    h = e.header
    if h is None:
        return (e.path, e.size, e.mtime_ns, e.seen_at, e.sha256, e.error) + (None,) * 10
    return (
        e.path,
        e.size,
        e.mtime_ns,
        e.seen_at,
        e.sha256,
        None,
        h.kind,
        h.sop_class_uid,
        h.sop_instance_uid,
        h.modality,
        h.patient_id,
        h.patient_name,
        h.study_uid,
        h.series_uid,
        h.for_uid,
        json.dumps(h.info, sort_keys=True),
    )


def _from_row(row: tuple) -> FileEntry:
    path, size, mtime_ns, seen_at, sha, error, kind = row[:7]
    header = None
    if kind is not None:
        header = HeaderRecord(*row[6:15], info=json.loads(row[15] or "{}"))
    return FileEntry(path, size, mtime_ns, seen_at, sha, header, error)
