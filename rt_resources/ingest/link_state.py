"""The drop's courses, kept linked in the index and updated by what changed.

:func:`~rt_resources.ingest.linking.link_courses` joins files into courses only through UIDs they
share (SOP Instance, series, study, frame of reference, and the UIDs they reference:
:func:`~rt_resources.ingest.linking.link_tokens`). Two parts of a drop that share no such UID,
directly or through other files, link independently. So after a refresh this store links again
only the part of the drop a change reaches:

* *copies* (layer 1): the files holding one SOP Instance UID resolve alone
  (:func:`~rt_resources.ingest.linking.resolve_copies`): the group's used file, or none when copies
  disagree. A copy added to or removed from a group whose used file stays the same changes that
  copy's rejection only, whatever the group's size;
* *links* (layer 2): the used files whose group changed, and every used file reachable from them
  through a shared UID (as stored before the change, or as read now), are linked again with
  ``link_courses``; their old courses and rejections are replaced.

The result equals a full re-link of the drop (``tests/ingest/test_incremental_linking.py``
compares both). What changed comes from the index's change log (table ``dirty``, written by
:meth:`DropIndex.refresh`: every path parsed or removed, with the SOP Instance UID it held); the
store consumes it under the index's lock. A course linked again gets the store's new version, so
a reader (the sensor) asks for the courses changed since the version it last saw
(:meth:`LinkStore.changed_since`) instead of loading every course.

The store also keeps :meth:`LinkStore.state`, a digest of every course (key, fingerprint) and
every rejection (path, reason), summed so that a change updates it without reading the rest
(:func:`links_digest` computes the same from a :class:`LinkResult`).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import sqlite3
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from rt_resources.ingest.index import _COLUMNS, DropIndex, FileEntry, _from_row, _token
from rt_resources.ingest.linking import (
    Course,
    LinkResult,
    Rejection,
    duplicate_reason,
    link_courses,
    link_tokens,
    resolve_copies,
)

#: a change log longer than this, and than this fraction of the index, is not applied row by row:
#: the links are built again from scratch
REBUILD_DIRTY = 20_000
REBUILD_FRACTION = 0.2
#: used files linked together in one ``link_courses`` call by a full build (whole components)
BUILD_BATCH = 5_000
_MOD = 1 << 128
_CHUNK = 500  # values in one SQL IN (...)

_COURSE_FIELDS = (
    "patient_id",
    "patient_name",
    "study_uid",
    "ct_series_uid",
    "for_uid",
    "struct_uids",
    "plan_uids",
    "dose_uids",
    "reg_uids",
    "other_series_uids",
    "notes",
)
_FILE_COLUMNS = ", ".join(f"f.{c}" for c in _COLUMNS)


def _item_hash(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:16], "big")


def _course_item(key: str, fingerprint: str) -> str:
    return f"course\t{key}\t{fingerprint}"


def _rejection_item(path: str, reason: str) -> str:
    return f"rejected\t{path}\t{reason}"


def _digest(total: int) -> str:
    return f"{total % _MOD:032x}"


def links_digest(links: LinkResult) -> str:
    """The digest :meth:`LinkStore.state` keeps, computed from a link result."""
    items = [_course_item(c.key, c.fingerprint) for c in links.courses]
    items += [_rejection_item(r.path, r.reason) for r in links.rejections]
    return _digest(sum(_item_hash(i) for i in items))


@dataclass
class LinkUpdate:
    """What one :meth:`LinkStore.update` did."""

    token: str  #: the store's version after the update (see :meth:`LinkStore.token`)
    rebuilt: bool  #: built from scratch (first use, or a change log too long to apply)
    n_changed_paths: int  #: paths in the change log it applied
    n_relinked: int  #: used files linked again (0: only copies' rejections changed)
    n_courses: int  #: courses written
    seconds: float


def _chunks(values: Iterable, size: int = _CHUNK) -> Iterator[list]:
    values = list(values)
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _select_in(con: sqlite3.Connection, sql: str, values: Iterable, *params) -> list[tuple]:
    """Rows of ``sql`` (its ``{}`` replaced by the placeholders) for ``values``, in chunks;
    ``params`` fill the placeholders before the ``IN``."""
    rows: list[tuple] = []
    for chunk in _chunks(values):
        rows += con.execute(sql.format(",".join("?" * len(chunk))), (*params, *chunk)).fetchall()
    return rows


def _execute_in(con: sqlite3.Connection, sql: str, values: Iterable, *params) -> None:
    """``sql`` (a DELETE or UPDATE, its ``{}`` the placeholders) for ``values``, in chunks."""
    for chunk in _chunks(values):
        con.execute(sql.format(",".join("?" * len(chunk))), (*params, *chunk))


class LinkStore:
    """The linked courses of one drop, in its index's SQLite file."""

    def __init__(self, index: DropIndex, secret: bytes) -> None:
        self.index = index
        self.secret = secret

    # ---- reading -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        con = self.index._connect()
        con.executescript(
            """
            CREATE INDEX IF NOT EXISTS files_sop ON files (sop_instance_uid);
            CREATE TABLE IF NOT EXISTS link_groups (sop TEXT PRIMARY KEY, path TEXT, sha256 TEXT, n INTEGER);
            CREATE TABLE IF NOT EXISTS link_tokens (token TEXT, sop TEXT);
            CREATE INDEX IF NOT EXISTS link_tokens_token ON link_tokens (token);
            CREATE INDEX IF NOT EXISTS link_tokens_sop ON link_tokens (sop);
            CREATE TABLE IF NOT EXISTS link_courses
                (key TEXT PRIMARY KEY, version INTEGER, fingerprint TEXT, data TEXT);
            CREATE INDEX IF NOT EXISTS link_courses_version ON link_courses (version);
            CREATE TABLE IF NOT EXISTS link_members (key TEXT, path TEXT, sop TEXT);
            CREATE INDEX IF NOT EXISTS link_members_key ON link_members (key);
            CREATE INDEX IF NOT EXISTS link_members_sop ON link_members (sop);
            CREATE TABLE IF NOT EXISTS link_rejections (path TEXT, reason TEXT, kind TEXT, sop TEXT, layer INTEGER);
            CREATE INDEX IF NOT EXISTS link_rejections_path ON link_rejections (path);
            CREATE INDEX IF NOT EXISTS link_rejections_sop ON link_rejections (sop, layer);
            """
        )
        return con

    def _meta(self, con: sqlite3.Connection, key: str, default: str = "") -> str:
        row = con.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else default

    def token(self) -> str:
        """Names the linked state: ``<index id>:<link version>``; changes whenever an update
        changed a course or a rejection (or may have)."""
        con = self._connect()
        try:
            return self._token(con)
        finally:
            con.close()

    def _token(self, con: sqlite3.Connection) -> str:
        return f"{_token(con).split(':')[0]}:{self._meta(con, 'link_version', '0')}"

    def changed_since(self, token: str) -> list[str] | None:
        """Keys of the courses linked again after the version ``token`` names; ``None`` when the
        token is of another index (rebuilt) or empty: every course may have changed."""
        con = self._connect()
        try:
            index_id, _, version = (token or "").partition(":")
            if not token or index_id != _token(con).split(":")[0] or not version.isdigit():
                return None
            rows = con.execute("SELECT key FROM link_courses WHERE version > ?", (int(version),)).fetchall()
            return [row[0] for row in rows]
        finally:
            con.close()

    def state(self) -> str:
        """Digest of every course (key, fingerprint) and rejection (path, reason): :func:`links_digest`."""
        con = self._connect()
        try:
            return _digest(int(self._meta(con, "link_sum", "0")))
        finally:
            con.close()

    def keys(self) -> list[str]:
        con = self._connect()
        try:
            return [row[0] for row in con.execute("SELECT key FROM link_courses ORDER BY key")]
        finally:
            con.close()

    def courses(self, keys: Iterable[str] | None = None) -> list[Course]:
        """The courses ``keys`` (those linked now; default every course), with their files, by key."""
        con = self._connect()
        try:
            con.execute("BEGIN")  # one snapshot: heads and members as one update left them
            if keys is None:
                heads = con.execute("SELECT key, data FROM link_courses").fetchall()
                members = con.execute(
                    f"SELECT m.key, {_FILE_COLUMNS} FROM link_members m JOIN files f ON f.path = m.path"
                ).fetchall()
            else:
                keys = sorted(set(keys))
                heads = _select_in(con, "SELECT key, data FROM link_courses WHERE key IN ({})", keys)
                members = _select_in(
                    con,
                    f"SELECT m.key, {_FILE_COLUMNS} FROM link_members m JOIN files f ON f.path = m.path "
                    "WHERE m.key IN ({})",
                    keys,
                )
            con.commit()
        finally:
            con.close()
        files: dict[str, list[FileEntry]] = defaultdict(list)
        for row in members:
            files[row[0]].append(_from_row(row[1:]))
        courses = [
            Course(key=key, files=sorted(files[key], key=lambda f: f.path), **json.loads(data)) for key, data in heads
        ]
        return sorted(courses, key=lambda c: c.key)

    def rejections(self) -> list[Rejection]:
        con = self._connect()
        try:
            rows = con.execute("SELECT path, reason, kind FROM link_rejections").fetchall()
        finally:
            con.close()
        return sorted((Rejection(*row) for row in rows), key=lambda r: r.path)

    def result(self) -> LinkResult:
        """Every course and rejection, as ``link_courses`` over the whole index would give them."""
        return LinkResult(self.courses(), self.rejections())

    def unusable_changed_at(self, folders: Iterable[str]) -> dict[str, float]:
        """Folder -> when a scan last saw an unusable file there (a slice still being copied) change,
        for those of ``folders`` holding one (one query for every course a tick looks at)."""
        con = self._connect()
        try:
            query = "SELECT dir, max(seen_at) FROM files WHERE kind IS NULL AND dir IN ({}) GROUP BY dir"
            return dict(_select_in(con, query, folders))
        finally:
            con.close()

    # ---- updating ------------------------------------------------------------------------------

    def update(self) -> LinkUpdate:
        """Apply the index's change log (under the index's lock: no refresh writes meanwhile)."""
        start = time.perf_counter()
        self.index.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.index.path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            con = self._connect()
            try:
                return self._update(con, start)
            finally:
                con.close()

    def _update(self, con: sqlite3.Connection, start: float) -> LinkUpdate:
        built = self._meta(con, "link_built") == "1"
        last = con.execute("SELECT max(rowid) FROM dirty").fetchone()[0]
        if built and last is None:
            return LinkUpdate(self._token(con), False, 0, 0, 0, time.perf_counter() - start)
        version = int(self._meta(con, "link_version", "0")) + 1
        n_dirty = con.execute("SELECT count(*) FROM dirty WHERE rowid <= ?", (last or 0,)).fetchone()[0]
        with con:
            rebuild = not built or (
                n_dirty > REBUILD_DIRTY
                and n_dirty > REBUILD_FRACTION * con.execute("SELECT count(*) FROM files").fetchone()[0]
            )
            if rebuild:
                relinked, n_courses, total = self._build(con, version)
            else:
                relinked, n_courses, total = self._apply(con, last, version)
            con.execute("DELETE FROM dirty WHERE rowid <= ?", (last or 0,))
            for key, value in (("link_built", "1"), ("link_version", str(version)), ("link_sum", str(total % _MOD))):
                con.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
        return LinkUpdate(
            self._token(con), rebuild, n_dirty, relinked, n_courses,
            time.perf_counter() - start,
        )  # fmt: skip

    def _build(self, con: sqlite3.Connection, version: int) -> tuple[int, int, int]:
        """Link the whole index again, one batch of whole components at a time. A course whose
        content (fingerprint) is what it was keeps its version: the sensor does not look at it again."""
        kept = dict(con.execute("SELECT key || ':' || fingerprint, version FROM link_courses"))
        for table in ("link_groups", "link_tokens", "link_courses", "link_members", "link_rejections"):
            con.execute(f"DELETE FROM {table}")
        total = 0
        # unusable files, then the copies of each SOP Instance UID, streamed in UID order
        unusable = con.execute("SELECT path, error FROM files WHERE kind IS NULL").fetchall()
        total += self._insert_rejections(con, [Rejection(p, e or "unusable", "") for p, e in unusable], None, 0)
        rows = con.execute(
            "SELECT sop_instance_uid, path, sha256, kind FROM files WHERE kind IS NOT NULL "
            "ORDER BY sop_instance_uid, path"
        )
        groups: list[tuple] = []
        group: list[tuple[str, str, str]] = []
        uid = None

        def resolve() -> int:
            keep, refused = resolve_copies(uid, group)
            groups.append((uid, keep, group[0][1] if keep else None, len(group)))
            return self._insert_rejections(con, refused, uid, 1)

        for sop, path, sha, kind in rows:  # streamed: written to other tables meanwhile
            if sop != uid and group:
                total += resolve()
                group = []
            if len(groups) >= 10_000:
                con.executemany("INSERT INTO link_groups (sop, path, sha256, n) VALUES (?, ?, ?, ?)", groups)
                groups = []
            uid = sop
            group.append((path, sha, kind))
        if group:
            total += resolve()
        con.executemany("INSERT INTO link_groups (sop, path, sha256, n) VALUES (?, ?, ?, ?)", groups)

        # components of the used files through their tokens (union-find), then link batch by batch
        parent: dict[str, str] = {}

        def find(x: str) -> str:
            root = x
            while parent.setdefault(root, root) != root:
                root = parent[root]
            while parent[x] != root:
                parent[x], x = root, parent[x]
            return root

        query = f"SELECT g.sop, {_FILE_COLUMNS} FROM link_groups g JOIN files f ON f.path = g.path"
        for row in con.execute(query):
            entry = _from_row(row[1:])
            root = find("sop:" + row[0])
            for token in link_tokens(entry.header):
                parent[find(token)] = root
        components: dict[str, list[str]] = defaultdict(list)
        for node in list(parent):
            if node.startswith("sop:"):
                components[find(node)].append(node[4:])
        relinked = n_courses = 0
        batch: list[str] = []
        for sops in [*components.values(), []]:
            batch += sops
            if len(batch) >= BUILD_BATCH or (not sops and batch):
                n, c, t = self._relink(con, set(batch), version, kept)
                relinked, n_courses, total = relinked + n, n_courses + c, total + t
                batch = []
        return relinked, n_courses, total

    def _apply(self, con: sqlite3.Connection, last: int, version: int) -> tuple[int, int, int]:
        """Apply the change log up to row ``last``; returns (relinked, courses written, digest delta + old)."""
        total = int(self._meta(con, "link_sum", "0"))
        old_sop: dict[str, str | None] = {}
        for path, sop in con.execute("SELECT path, old_sop FROM dirty WHERE rowid <= ? ORDER BY rowid", (last,)):
            old_sop.setdefault(path, sop)  # the first: what the store last saw
        now = {
            row[0]: row[1:]
            for row in _select_in(
                con, "SELECT path, sop_instance_uid, sha256, kind, error FROM files WHERE path IN ({})", old_sop
            )
        }
        # unusable files: their rejections follow their rows
        total += self._delete_rejections(con, 0, "path", old_sop)
        unusable = [Rejection(p, row[3] or "unusable", "") for p, row in now.items() if row[2] is None]
        total += self._insert_rejections(con, unusable, None, 0)

        # copies: each SOP Instance UID group a changed path left or joined
        by_group: dict[str, set[str]] = defaultdict(set)
        for path, sop in old_sop.items():
            if sop:
                by_group[sop].add(path)
            if path in now and now[path][0]:
                by_group[now[path][0]].add(path)
        relink: set[str] = set()
        for uid, paths in by_group.items():
            changed, delta = self._regroup(con, uid, paths, old_sop, now)
            total += delta
            if changed:
                relink.add(uid)
        if not relink:
            return 0, 0, total
        n, c, t = self._relink(con, self._closure(con, relink), version)
        return n, c, total + t

    def _regroup(self, con, uid: str, paths: set[str], old_sop: dict, now: dict) -> tuple[bool, int]:
        """Resolve SOP Instance UID ``uid``'s copies again after ``paths`` changed; ``(whether its
        used file changed, digest delta)``. A copy that joins or leaves a group of identical copies
        whose used file stays costs only its own rejection."""
        stored = con.execute("SELECT path, sha256, n FROM link_groups WHERE sop = ?", (uid,)).fetchone()
        left = [p for p in paths if old_sop.get(p) == uid]
        joined = [p for p in paths if p in now and now[p][0] == uid]
        if stored and stored[0] and stored[0] not in paths and all(now[p][1] == stored[1] for p in joined):
            keep, sha, n = stored
            if all(p > keep for p in joined):  # the used file stays: only these copies' rejections
                delta = self._delete_rejections(con, 1, "path", left, sop=uid)
                reason = duplicate_reason(keep)
                delta += self._insert_rejections(con, [Rejection(p, reason, now[p][2]) for p in joined], uid, 1)
                con.execute("UPDATE link_groups SET n = ? WHERE sop = ?", (n - len(left) + len(joined), uid))
                return False, delta
        group = con.execute(
            "SELECT path, sha256, kind FROM files WHERE sop_instance_uid = ? AND kind IS NOT NULL", (uid,)
        ).fetchall()
        delta = self._delete_rejections(con, 1, "sop", [uid])
        con.execute("DELETE FROM link_groups WHERE sop = ?", (uid,))
        keep = None
        if group:
            keep, refused = resolve_copies(uid, group)
            delta += self._insert_rejections(con, refused, uid, 1)
            sha = next(s for p, s, _ in group if p == keep) if keep else None
            con.execute(
                "INSERT INTO link_groups (sop, path, sha256, n) VALUES (?, ?, ?, ?)", (uid, keep, sha, len(group))
            )
        return True, delta  # its used file may have changed (or been rewritten): relinked

    def _closure(self, con: sqlite3.Connection, seeds: set[str]) -> set[str]:
        """``seeds`` and every used file joined to them through a token, stored or read now."""
        members = set(seeds)
        tokens = {t for (t,) in _select_in(con, "SELECT DISTINCT token FROM link_tokens WHERE sop IN ({})", seeds)}
        for entry in self._entries(con, seeds):
            tokens |= link_tokens(entry.header)
        seen: set[str] = set()
        while tokens - seen:
            frontier = tokens - seen
            seen |= frontier
            found = {
                s for (s,) in _select_in(con, "SELECT DISTINCT sop FROM link_tokens WHERE token IN ({})", frontier)
            }
            new = found - members
            members |= new
            tokens |= {t for (t,) in _select_in(con, "SELECT DISTINCT token FROM link_tokens WHERE sop IN ({})", new)}
        return members

    def _entries(self, con: sqlite3.Connection, sops: Iterable[str]) -> list[FileEntry]:
        """The used files of SOP Instance UIDs ``sops`` (those whose copies agree), by path."""
        rows = _select_in(
            con,
            f"SELECT {_FILE_COLUMNS} FROM link_groups g JOIN files f ON f.path = g.path WHERE g.sop IN ({{}})",
            sops,
        )
        return sorted((_from_row(row) for row in rows), key=lambda e: e.path)

    def _relink(
        self, con: sqlite3.Connection, sops: set[str], version: int, kept: dict[str, int] | None = None
    ) -> tuple[int, int, int]:
        """Link the used files of ``sops`` (whole components) again, replacing what they had;
        ``(files linked, courses, digest delta)``. ``kept`` (a build: the tables were emptied, nothing
        to replace): ``"key:fingerprint"`` -> version of the courses before, kept where unchanged."""
        delta = 0 if kept is not None else self._unlink(con, sops)
        kept = kept or {}
        entries = self._entries(con, sops)
        linked = link_courses(entries, self.secret)
        sop_of = {e.path: e.header.sop_instance_uid for e in entries}
        con.executemany(
            "INSERT INTO link_tokens (token, sop) VALUES (?, ?)",
            [(t, e.header.sop_instance_uid) for e in entries for t in link_tokens(e.header)],
        )
        for c in linked.courses:
            data = {name: getattr(c, name) for name in _COURSE_FIELDS}
            fingerprint = c.fingerprint
            con.execute(
                "INSERT INTO link_courses (key, version, fingerprint, data) VALUES (?, ?, ?, ?)",
                (c.key, kept.get(f"{c.key}:{fingerprint}", version), fingerprint, json.dumps(data)),
            )
            con.executemany(
                "INSERT INTO link_members (key, path, sop) VALUES (?, ?, ?)",
                [(c.key, f.path, sop_of[f.path]) for f in c.files],
            )
            delta += _item_hash(_course_item(c.key, fingerprint))
        by_sop: dict[str, list[Rejection]] = defaultdict(list)
        for r in linked.rejections:
            by_sop[sop_of[r.path]].append(r)
        for sop, refused in by_sop.items():
            delta += self._insert_rejections(con, refused, sop, 2)
        return len(entries), len(linked.courses), delta

    def _unlink(self, con: sqlite3.Connection, sops: set[str]) -> int:
        """Remove what ``sops`` were linked into: their courses, tokens and link rejections."""
        keys = {k for (k,) in _select_in(con, "SELECT DISTINCT key FROM link_members WHERE sop IN ({})", sops)}
        old = _select_in(con, "SELECT key, fingerprint FROM link_courses WHERE key IN ({})", keys)
        delta = -sum(_item_hash(_course_item(k, fp)) for k, fp in old)
        _execute_in(con, "DELETE FROM link_courses WHERE key IN ({})", keys)
        _execute_in(con, "DELETE FROM link_members WHERE key IN ({})", keys)
        _execute_in(con, "DELETE FROM link_tokens WHERE sop IN ({})", sops)
        return delta + self._delete_rejections(con, 2, "sop", sops)

    def _insert_rejections(self, con, rejections: list[Rejection], sop: str | None, layer: int) -> int:
        con.executemany(
            "INSERT INTO link_rejections (path, reason, kind, sop, layer) VALUES (?, ?, ?, ?, ?)",
            [(r.path, r.reason, r.kind, sop, layer) for r in rejections],
        )
        return sum(_item_hash(_rejection_item(r.path, r.reason)) for r in rejections)

    def _delete_rejections(self, con, layer: int, column: str, values: Iterable, sop: str | None = None) -> int:
        """Delete the ``layer`` rejections whose ``column`` (path or sop) is in ``values`` (and of
        SOP Instance UID ``sop``); returns the digest delta."""
        where = f"layer = ? {'AND sop = ? ' if sop is not None else ''}AND {column} IN ({{}})"
        params = (layer, sop) if sop is not None else (layer,)
        values = list(values)
        rows = _select_in(con, f"SELECT path, reason FROM link_rejections WHERE {where}", values, *params)
        _execute_in(con, f"DELETE FROM link_rejections WHERE {where}", values, *params)
        return -sum(_item_hash(_rejection_item(path, reason)) for path, reason in rows)
