"""The drop's files on disk: listing a folder, walking the drop, reading a file once (its sha256 and
header, never its pixels). :mod:`rt_resources.ingest.index` keeps what these find in SQLite."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from rt_resources.dicom.header import HeaderError, HeaderRecord, read_header, sha256_bytes

#: a file of this name in a drop folder says "this folder is complete": skip the quiet period
COMPLETE_MARKER = "_COMPLETE"
#: the DICOM receiver's own folder at the drop root (staging of associations in progress or aborted,
#: its log); never indexed: what is there is not complete (see :mod:`rt_resources.receive`)
RECEIVER_FOLDER = ".rtpipeline-receive"


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


def list_folder(folder: Path) -> tuple[list[tuple[str, int, int]], list[str], bool] | None:
    """One folder: ``(name, size, mtime_ns)`` of its regular files, its subfolders' names, and
    whether it holds a marker; ``None`` when it cannot be listed.

    Symbolic links to folders are not subfolders (no loops); symbolic links to files are files.
    """
    try:
        with os.scandir(folder) as it:
            entries = list(it)
    except OSError:
        return None
    files: list[tuple[str, int, int]] = []
    subdirs: list[str] = []
    marker = False
    for entry in entries:
        if not _utf8(entry.name):  # cannot be stored or shown as text: one unusable entry, never read
            files.append((os.fsencode(entry.name).decode("utf-8", "backslashreplace"), 0, 0))
            continue
        if entry.is_dir(follow_symlinks=False):
            subdirs.append(entry.name)
            continue
        if not entry.is_file():
            continue
        if entry.name == COMPLETE_MARKER:
            marker = True
            continue
        try:
            st = entry.stat()
        except OSError:
            continue
        files.append((entry.name, st.st_size, st.st_mtime_ns))
    return files, subdirs, marker


def join_rel(folder: str, name: str) -> str:
    return name if folder == "." else f"{folder}/{name}"


def parent_rel(rel: str) -> str:
    head, sep, _ = rel.rpartition("/")
    return head if sep else "."


def walk_drop(drop_root: Path) -> tuple[list[tuple[str, int, int]], set[str]]:
    """List ``(relative path, size, mtime_ns)`` of every regular file, and marker folders.

    Symbolic links to folders are not followed (no loops); hidden folders are walked, except the
    receiver's staging folder at the drop root (:data:`RECEIVER_FOLDER`).
    """
    files: list[tuple[str, int, int]] = []
    markers: set[str] = set()
    stack = ["."]
    while stack:
        rel = stack.pop()
        listing = list_folder(drop_root if rel == "." else drop_root / rel)
        if listing is None:
            continue
        names, subdirs, marker = listing
        if marker:
            markers.add(rel)
        stack += [join_rel(rel, d) for d in subdirs if not (rel == "." and d == RECEIVER_FOLDER)]
        files += [(join_rel(rel, name), size, mtime_ns) for name, size, mtime_ns in names]
    files.sort()
    return files, markers


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


#: why a file or folder whose name is not UTF-8 is not used (it is indexed under its name with the
#: bad bytes written as \\xNN, which names no file)
NOT_UTF8 = "name not valid UTF-8 (shown with \\xNN escapes; for a folder, nothing in it is read): rename it"


def read_entry(drop_root: Path, rel: str, size: int, mtime_ns: int, now: float) -> FileEntry:
    """Read one file once: hash its bytes and parse its header."""
    if size == 0 and mtime_ns == 0 and "\\x" in rel and not os.path.lexists(drop_root / rel):
        return FileEntry(rel, size, mtime_ns, now, "", None, NOT_UTF8)
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


def read_entry_chunks(
    drop_root: Path, files: list[tuple[str, int, int]], now: float, workers: int | None, chunk: int
) -> Iterator[list[FileEntry]]:
    """Read ``files`` (in order), ``chunk`` at a time, so a caller stores each before the next is
    read (a cold scan of a million files never holds them all); across ``workers`` processes (one
    pool for every chunk) when there are many.

    ``workers`` defaults to the CPU count (at most 8). Header parsing is CPU-bound Python,
    so processes, not threads; small batches (an incremental scan) stay in process.
    """
    workers = workers or min(8, os.cpu_count() or 1)
    if workers <= 1 or len(files) < PARALLEL_MIN_FILES:
        for start in range(0, len(files), chunk):
            yield _read_batch(drop_root, files[start : start + chunk], now)
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for start in range(0, len(files), chunk):
            part = files[start : start + chunk]
            size = max(50, len(part) // (workers * 4))
            batches = [part[i : i + size] for i in range(0, len(part), size)]
            results = pool.map(_read_batch, [drop_root] * len(batches), batches, [now] * len(batches))
            yield [entry for batch in results for entry in batch]
