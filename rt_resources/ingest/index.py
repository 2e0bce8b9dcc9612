"""Incremental index of a DICOM drop folder, persisted in the state folder.

Only files that are new or whose size or mtime changed are read (once: hashed and header-parsed,
never pixel decoded). The index is a SQLite file in the state folder (:mod:`rt_resources.state`)
so the sensor, the CLI and asset steps share it across processes. The drop folder is only ever read.

How much of the drop a scan looks at (:meth:`DropIndex.refresh`):

* a *full re-stat* lists every folder and stats every file: its cost follows the archive's size
  (~20 µs a file). It runs on the first scan, when ``full_rescan_s`` seconds have passed since the
  last one, and on every scan when ``full_rescan_s`` is 0 (the default of :meth:`DropIndex.scan`;
  the sensor and the assets use ``RT_DROP_FULL_RESCAN_S``, default an hour);
* a *quick* scan in between stats only the folders it knows (table ``dirs``). A folder whose
  ``(mtime, ctime)`` is what its last listing recorded is not listed and its files are not
  stat-ed: their rows are trusted, and its known subfolders are visited the same way. Adding,
  removing or renaming a file (also replacing one by rename, and copy tools that set the folder's
  mtime back: that changes its ctime) changes its folder, which is then listed and its files
  compared as in a full re-stat; a folder that is gone takes its files' rows with it. A folder is
  also listed again while its last listing was *racy* (the folder had changed less than
  :data:`RACY_S` before: a second change within the timestamps' granularity would not show) or
  *hot*: a folder where a listing found a change is listed again on every scan until a listing
  more than ``hot_s`` seconds after that change (at least one) finds nothing new. A file still
  being written grows in place, which does not touch its folder; the sensor passes its quiet
  period as ``hot_s``, so a course's folders are watched until the course is ready.

What a quick scan misses until the next full re-stat: a file overwritten *in place* (same path,
no rename) in a folder that has settled, a change behind a symbolic link to a file, and changes
in a folder on a file system whose clock runs more than :data:`RACY_S` behind this machine's.

With a watch (``DropIndex(watch=True)``, the sensor's) a quick scan does not even stat the
settled folders: this process's inotify watch names the folders where something happened since
the last scan (an overwrite in place included), and only those, the racy and the hot ones are
looked at (:mod:`rt_resources.ingest.watch`, which also says where the watch is not trusted and
the scan stats every folder as above).

Every path a scan parses or removes goes into the change log (table ``dirty``, with the SOP
Instance UID its row held), from which :mod:`rt_resources.ingest.link_state` links again only
what the change reaches. A cold scan reads, parses and writes :data:`READ_CHUNK` files at a time.

Every change written to the index bumps its version; :attr:`Refresh.token` names it, so a reader
(the sensor) tells "nothing changed since I last looked" from a refresh alone, without loading
the rows, whichever process ran the scan that found the change.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import stat
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rt_resources.dicom.header import HeaderRecord
from rt_resources.ingest.drop_files import (  # noqa: F401 (re-exported: the index's public names)
    COMPLETE_MARKER,
    PARALLEL_MIN_FILES,
    RECEIVER_FOLDER,
    FileEntry,
    join_rel,
    list_folder,
    parent_rel,
    read_entry,
    read_entry_chunks,
    walk_drop,
)
from rt_resources.ingest.watch import FolderWatch, watch_for

#: files read, parsed and written per transaction (a cold scan of a million files holds this many)
READ_CHUNK = 20_000

#: a folder that changed less than this many seconds before it was listed is listed again on the
#: next scan (file systems keep timestamps at a granularity of up to 2 s: FAT, HFS+, some NFS)
RACY_S = 2.0

_COLUMNS = (
    "path size mtime_ns seen_at sha256 error kind sop_class_uid sop_instance_uid modality "
    "patient_id patient_name study_uid series_uid for_uid info"
).split()


@dataclass
class ScanResult:
    """Outcome of one scan: every file of the drop, and what the scan had to do."""

    drop_root: Path
    entries: list[FileEntry]
    complete_dirs: set[str] = field(default_factory=set)  #: relative dirs holding a marker
    n_parsed: int = 0
    n_removed: int = 0
    seconds: float = 0.0
    token: str = ""  #: the index's version when these entries were loaded (:attr:`Refresh.token`)
    full: bool = True  #: whether the scan re-stat-ed every file


@dataclass
class Refresh:
    """What one refresh of the index did (:meth:`DropIndex.refresh`); no entry is loaded."""

    token: str  #: names the index's content: changes whenever a scan writes a change
    full: bool  #: a full re-stat (every folder listed, every file stat-ed)
    n_files: int  #: files of the drop (in the index) after the refresh
    n_dirs: int  #: folders of the drop
    n_listed: int  #: folders listed (the others were unchanged: their files were not stat-ed)
    n_stat: int  #: files stat-ed
    n_parsed: int  #: files read and parsed (new or changed)
    n_removed: int  #: rows removed (file or folder gone)
    markers_changed: bool  #: a _COMPLETE marker appeared or went
    seconds: float
    watched: bool = False  #: only folders with an inotify event (and racy or hot ones) were looked at

    @property
    def changed(self) -> bool:
        """Whether this refresh found anything: a file added, changed or removed, a marker."""
        return bool(self.n_parsed or self.n_removed or self.markers_changed)


def index_path_for(index_dir: Path, drop_root: Path) -> Path:
    """The SQLite file that indexes ``drop_root`` (one per drop folder)."""
    digest = hashlib.sha256(str(drop_root.resolve()).encode()).hexdigest()[:12]
    return index_dir / f"drop-{digest}.sqlite"


@dataclass
class _Dir:
    """A folder as its last listing saw it (a row of the ``dirs`` table)."""

    mtime_ns: int
    ctime_ns: int
    n_files: int
    marker: bool
    checked_at: float  #: scan time of its last listing
    changed_at: float | None  #: scan time of the last listing that found a change in it

    @classmethod
    def from_row(cls, row: tuple) -> _Dir:
        """From a ``dirs`` row selected as :data:`_DIR_COLUMNS` (its path first)."""
        return cls(row[1], row[2], row[3], bool(row[4]), row[5], row[6])

    def settled(self, st: os.stat_result, hot_s: float) -> bool:
        """Whether its files' rows can be trusted without listing it again."""
        if (st.st_mtime_ns, st.st_ctime_ns) != (self.mtime_ns, self.ctime_ns):
            return False
        if max(self.mtime_ns, self.ctime_ns) / 1e9 > self.checked_at - RACY_S:
            return False  # racy: it may have changed again within the same timestamp
        # hot: listed again until a listing more than hot_s after a change (at least one) finds nothing
        return self.changed_at is None or self.checked_at - self.changed_at > hot_s


_DIR_COLUMNS = "path, mtime_ns, ctime_ns, n_files, marker, checked_at, changed_at"


class DropIndex:
    """The persisted, incremental index of one drop folder."""

    def __init__(self, index_dir: Path, drop_root: Path, workers: int | None = None, watch: bool = False) -> None:
        self.drop_root = Path(drop_root)
        self.path = index_path_for(Path(index_dir), self.drop_root)
        self.workers = workers
        self.watch = watch  #: quick scans use this process's inotify watch (rt_resources.ingest.watch)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute(
            "CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, seen_at REAL, sha256 TEXT, error TEXT, kind TEXT, "
            "sop_class_uid TEXT, sop_instance_uid TEXT, modality TEXT, patient_id TEXT, "
            "patient_name TEXT, study_uid TEXT, series_uid TEXT, for_uid TEXT, info TEXT, dir TEXT)"
        )
        if "dir" not in {row[1] for row in con.execute("PRAGMA table_info(files)")}:
            _add_dir_column(con)  # an index written before folders were tracked
        con.execute("CREATE INDEX IF NOT EXISTS files_dir ON files (dir)")
        con.execute(
            "CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, mtime_ns INTEGER, ctime_ns INTEGER, "
            "n_files INTEGER, marker INTEGER, checked_at REAL, changed_at REAL)"
        )
        con.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
        # the change log of the linked courses (rt_resources.ingest.link_state): paths parsed or
        # removed since it last linked, with the SOP Instance UID each held before
        con.execute("CREATE TABLE IF NOT EXISTS dirty (path TEXT, old_sop TEXT)")
        if con.execute("SELECT 1 FROM meta WHERE key = 'index_id'").fetchone() is None:
            with con:  # names this index: a rebuilt one never repeats an old token
                con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('index_id', ?)", (uuid.uuid4().hex,))
        return con

    def load(self) -> dict[str, FileEntry]:
        """Every entry currently stored, by relative path."""
        con = self._connect()
        try:
            rows = con.execute(f"SELECT {', '.join(_COLUMNS)} FROM files").fetchall()
        finally:
            con.close()
        return {row[0]: _from_row(row) for row in rows}

    def markers(self) -> set[str]:
        """Relative folders holding a ``_COMPLETE`` marker, as the last scan saw them."""
        con = self._connect()
        try:
            return {row[0] for row in con.execute("SELECT path FROM dirs WHERE marker")}
        finally:
            con.close()

    def token(self) -> str:
        """The index's current version (see :attr:`Refresh.token`)."""
        con = self._connect()
        try:
            return _token(con)
        finally:
            con.close()

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

    def scan(self, now: float | None = None, full_rescan_s: float = 0.0, hot_s: float = 0.0) -> ScanResult:
        """Refresh the index (:meth:`refresh`: by default a full re-stat), persist, and return every entry."""
        return self.result(self.refresh(now, full_rescan_s, hot_s))

    def result(self, refresh: Refresh) -> ScanResult:
        """Every entry and marker of the index, after ``refresh`` (loads every row)."""
        start = time.perf_counter()
        entries = sorted(self.load().values(), key=lambda e: e.path)
        return ScanResult(
            drop_root=self.drop_root,
            entries=entries,
            complete_dirs=self.markers(),
            n_parsed=refresh.n_parsed,
            n_removed=refresh.n_removed,
            seconds=refresh.seconds + time.perf_counter() - start,
            token=refresh.token,
            full=refresh.full,
        )

    def refresh(self, now: float | None = None, full_rescan_s: float = 0.0, hot_s: float = 0.0) -> Refresh:
        """Bring the index up to date with the drop without loading its rows (see the module's docstring).

        A full re-stat when ``full_rescan_s`` is 0, on the first refresh, or when ``full_rescan_s``
        seconds have passed since the last one (by ``now``); else a quick one, which lists only
        folders that changed, are racy, or are hot (a change found in them has not yet been
        followed by a listing more than ``hot_s`` seconds later). With ``watch`` (the index's) and
        this process's inotify watch armed, a quick one stats only the folders with an event and
        those racy or hot (:mod:`rt_resources.ingest.watch`). One refresh at a time per index
        (a ``flock`` beside it, in the machine-local state folder): two that overlap could each
        write back the other's stale folder rows.
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            watch = watch_for(self.drop_root, self.path) if self.watch else None
            if watch is None or not watch.usable:
                return self._refresh(now, full_rescan_s, hot_s, None)
            with watch.lock:
                try:
                    return self._refresh(now, full_rescan_s, hot_s, watch)
                except BaseException:
                    watch.armed = False  # the events it read are lost with it: the next scan stats all
                    raise

    def _refresh(self, now: float | None, full_rescan_s: float, hot_s: float, watch: FolderWatch | None) -> Refresh:
        start = time.perf_counter()
        now = time.time() if now is None else now
        if not self.drop_root.is_dir():
            raise FileNotFoundError(f"drop folder {self.drop_root} does not exist or is not a folder")
        # before any stat: events after this point wait for the next scan
        events, complete = watch.changed() if watch is not None else (set(), False)
        con = self._connect()
        try:
            last_full = con.execute("SELECT value FROM meta WHERE key = 'last_full'").fetchone()
            full = full_rescan_s <= 0 or last_full is None or now - float(last_full[0]) >= full_rescan_s
            index_id = _token(con).split(":")[0]
            watched = watch is not None and watch.armed and watch.index_id == index_id and complete and not full
            flagged = set(events)  # listed whatever their stat says (an overwrite in place)
            if watched:  # the folders with an event, and those racy, hot or not watched
                known_dirs: dict[str, _Dir] = _LazyDirs(con)
                children: dict[str, list[str]] = _LazyChildren(con)
                stack = sorted(flagged | _unsettled(con, hot_s) | watch.unwatched, reverse=True)
            else:
                known_dirs = {row[0]: _Dir.from_row(row) for row in con.execute(f"SELECT {_DIR_COLUMNS} FROM dirs")}
                children = defaultdict(list)
                for rel in known_dirs:
                    if rel != ".":
                        children[parent_rel(rel)].append(rel)
                stack = ["."]
            arming = watch is not None and not watched

            kept: dict[str, _Dir] = {}  # not listed: rows trusted
            listed: dict[str, _Dir] = {}
            to_write: list[tuple] = []  # dirs rows that changed
            to_read: list[tuple[str, int, int]] = []
            removed: list[str] = []
            vanished: list[str] = []  # watched: folders found gone (their subfolders go with them)
            markers_changed = False

            def keep_unreadable(rel: str) -> None:
                """A known folder that cannot be read now (EACCES, ESTALE, EIO): its rows stay, its
                subfolders are still visited, and it is listed again on the next scan."""
                old = known_dirs.get(rel)
                if old is None:
                    return
                kept[rel] = old
                if not watched:
                    stack.extend(children[rel])
                to_write.append((rel, -1, -1, old.n_files, int(old.marker), now, old.changed_at))

            while stack:
                rel = stack.pop()
                if rel in kept or rel in listed:
                    continue
                folder = self.drop_root if rel == "." else self.drop_root / rel
                newly_watched = False
                if watch is not None:  # watched before its stat: a change after it raises an event
                    newly_watched = not watch.watched(rel)
                    watch.add(rel)
                if watched and newly_watched:  # settled by a scan without this watch: looked at whole
                    flagged.add(rel)
                try:  # stat before listing: a change during the listing shows on the next scan
                    st = os.stat(folder) if rel == "." else os.lstat(folder)
                except (FileNotFoundError, NotADirectoryError):
                    if watched and known_dirs.get(rel) is not None:
                        vanished.append(rel)
                    continue  # gone: its rows go
                except OSError:
                    keep_unreadable(rel)
                    continue
                if not stat.S_ISDIR(st.st_mode):
                    if watched and known_dirs.get(rel) is not None:
                        vanished.append(rel)
                    continue
                old = known_dirs.get(rel)
                if not full and old is not None and rel not in flagged and old.settled(st, hot_s):
                    kept[rel] = old
                    if not watched:
                        stack += children[rel]
                    continue
                listing = list_folder(folder)
                if listing is None:  # there but unreadable now: kept, listed again next time
                    keep_unreadable(rel)
                    continue
                names, subdirs, marker = listing
                subrels = [join_rel(rel, d) for d in subdirs if not (rel == "." and d == RECEIVER_FOLDER)]
                if watched:  # watched subfolders report their own changes; the others are visited now
                    stack += [sub for sub in subrels if known_dirs.get(sub) is None or not watch.watched(sub)]
                    vanished += sorted(set(children[rel]) - set(subrels))
                else:
                    stack += subrels
                query = "SELECT path, size, mtime_ns FROM files WHERE dir = ?"  # one folder's rows at a time
                known = {path: (size, mtime_ns) for path, size, mtime_ns in con.execute(query, (rel,))}
                n_read = len(to_read)
                for name, size, mtime_ns in names:
                    path = join_rel(rel, name)
                    if known.pop(path, None) != (size, mtime_ns):
                        to_read.append((path, size, mtime_ns))
                removed += known
                marker_changed = marker != (old.marker if old is not None else False)
                markers_changed |= marker_changed
                changed = old is None or marker_changed or len(to_read) > n_read or bool(known)
                changed_at = now if changed or old is None else old.changed_at
                listed[rel] = _Dir(st.st_mtime_ns, st.st_ctime_ns, len(names), marker, now, changed_at)
                if changed or old is None or not old.settled(st, hot_s):  # else the row says the same
                    to_write.append((rel, st.st_mtime_ns, st.st_ctime_ns, len(names), int(marker), now, changed_at))
            if watched:
                gone = _with_subfolders(con, vanished)
                markers_changed |= any(row[1] for row in _select_dirs(con, "path, marker", gone))
            else:
                gone = [rel for rel in known_dirs if rel not in kept and rel not in listed]
                markers_changed |= any(known_dirs[rel].marker for rel in gone)

            # read and written in chunks: a cold scan never holds every entry; each chunk counts as a
            # change (version), so a scan killed half way leaves an index that says it changed
            logged = con.execute("SELECT value FROM meta WHERE key = 'link_built'").fetchone() is not None
            n_parsed = 0
            for entries in read_entry_chunks(self.drop_root, to_read, now, self.workers, READ_CHUNK):
                n_parsed += len(entries)
                with con:
                    if logged:
                        _log_changes(con, [e.path for e in entries])
                    con.executemany(
                        f"INSERT OR REPLACE INTO files ({', '.join(_COLUMNS)}, dir) "
                        f"VALUES ({', '.join('?' * (len(_COLUMNS) + 1))})",
                        [(*_to_row(e), parent_rel(e.path)) for e in entries],
                    )
                    _bump_version(con)
            n_removed = len(removed)
            if removed or gone or to_write or full:
                with con:
                    if logged:
                        _log_changes(con, removed)
                    con.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in removed])
                    for rel in gone:
                        if logged:
                            con.execute(_LOG_FOLDER, (rel,))
                        n_removed += con.execute("DELETE FROM files WHERE dir = ?", (rel,)).rowcount
                        con.execute("DELETE FROM dirs WHERE path = ?", (rel,))
                    con.executemany(
                        f"INSERT OR REPLACE INTO dirs ({_DIR_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)", to_write
                    )
                    if full:  # rows of a folder no scan recorded (a scan killed between its writes), gone since
                        orphans = [row[0] for row in con.execute(_ORPHANS)]
                        if logged:
                            _log_changes(con, orphans)
                        con.executemany("DELETE FROM files WHERE path = ?", [(p,) for p in orphans])
                        n_removed += len(orphans)
                        con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('last_full', ?)", (repr(now),))
                    if n_removed or markers_changed:
                        _bump_version(con)
            if watch is not None:
                for rel in gone:
                    watch.forget(rel)
                if arming and watch.usable:
                    watch.armed, watch.index_id = True, index_id  # every folder was watched before its stat
            if watched:
                n_dirs, n_files = con.execute("SELECT count(*), total(n_files) FROM dirs").fetchone()
            else:
                dirs = {**kept, **listed}
                n_dirs, n_files = len(dirs), sum(d.n_files for d in dirs.values())
            token = _token(con)
        finally:
            con.close()
        return Refresh(
            token=token,
            full=full,
            n_files=int(n_files),
            n_dirs=n_dirs,
            n_listed=len(listed),
            n_stat=sum(d.n_files for d in listed.values()),
            n_parsed=n_parsed,
            n_removed=n_removed,
            markers_changed=markers_changed,
            seconds=time.perf_counter() - start,
            watched=watched,
        )


class _LazyDirs(dict):
    """``dirs`` rows read when asked for (a watched scan looks at a few folders of many)."""

    def __init__(self, con: sqlite3.Connection) -> None:
        super().__init__()
        self.con = con

    def get(self, rel: str, default=None):
        if rel not in self:
            row = self.con.execute(f"SELECT {_DIR_COLUMNS} FROM dirs WHERE path = ?", (rel,)).fetchone()
            self[rel] = _Dir.from_row(row) if row else None
        value = super().get(rel)
        return default if value is None else value


class _LazyChildren(dict):
    """Known subfolders of a folder, read when asked for."""

    def __init__(self, con: sqlite3.Connection) -> None:
        super().__init__()
        self.con = con

    def __missing__(self, rel: str) -> list[str]:
        paths = [row[0] for row in _subtree(self.con, rel)]
        self[rel] = [p for p in paths if p != rel and parent_rel(p) == rel]
        return self[rel]


def _subtree(con: sqlite3.Connection, rel: str) -> list[tuple[str]]:
    """``dirs`` paths of folder ``rel`` and every folder under it."""
    if rel == ".":
        return con.execute("SELECT path FROM dirs").fetchall()
    return con.execute(
        "SELECT path FROM dirs WHERE path = ? OR (path > ? AND path < ?)", (rel, rel + "/", rel + "0")
    ).fetchall()  # "0" follows "/": the range holds exactly the paths under rel/


def _with_subfolders(con: sqlite3.Connection, rels: list[str]) -> list[str]:
    return sorted({row[0] for rel in rels for row in _subtree(con, rel)})


def _select_dirs(con: sqlite3.Connection, columns: str, rels: list[str]) -> list[tuple]:
    rows: list[tuple] = []
    for start in range(0, len(rels), 500):
        chunk = rels[start : start + 500]
        rows += con.execute(
            f"SELECT {columns} FROM dirs WHERE path IN ({','.join('?' * len(chunk))})", chunk
        ).fetchall()
    return rows


def _unsettled(con: sqlite3.Connection, hot_s: float) -> set[str]:
    """Folders a quick scan lists again whatever their stat says (see :meth:`_Dir.settled`): racy,
    hot, or unreadable at their last listing."""
    rows = con.execute(
        "SELECT path FROM dirs WHERE mtime_ns < 0 OR max(mtime_ns, ctime_ns) > (checked_at - ?) * 1e9 "
        "OR (changed_at IS NOT NULL AND checked_at - changed_at <= ?)",
        (RACY_S, hot_s),
    )
    return {row[0] for row in rows}


def _bump_version(con: sqlite3.Connection) -> None:
    con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('version', '0')")
    con.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")


_ORPHANS = "SELECT path FROM files WHERE dir NOT IN (SELECT path FROM dirs)"
_LOG_FOLDER = "INSERT INTO dirty (path, old_sop) SELECT path, sop_instance_uid FROM files WHERE dir = ?"


def _log_changes(con: sqlite3.Connection, paths: list[str]) -> None:
    """Note ``paths`` (about to be written or removed) in the change log, with their SOP Instance UID."""
    con.executemany(
        "INSERT INTO dirty (path, old_sop) VALUES (?, (SELECT sop_instance_uid FROM files WHERE path = ?))",
        [(p, p) for p in paths],
    )


def _token(con: sqlite3.Connection) -> str:
    meta = dict(con.execute("SELECT key, value FROM meta WHERE key IN ('index_id', 'version')").fetchall())
    return f"{meta.get('index_id', '')}:{meta.get('version', '0')}"


def _add_dir_column(con: sqlite3.Connection) -> None:
    """Add ``files.dir`` (each row's folder) to an index written by an earlier version."""
    con.execute("BEGIN IMMEDIATE")
    try:
        if "dir" not in {row[1] for row in con.execute("PRAGMA table_info(files)")}:  # another process may have
            con.execute("ALTER TABLE files ADD COLUMN dir TEXT")
            paths = [row[0] for row in con.execute("SELECT path FROM files")]
            con.executemany("UPDATE files SET dir = ? WHERE path = ?", [(parent_rel(p), p) for p in paths])
        con.commit()
    except BaseException:
        con.rollback()
        raise


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
