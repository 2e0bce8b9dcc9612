"""Linux inotify on the drop's folders: which folders changed since the last scan, without a
``stat`` per folder.

A quick scan (:meth:`DropIndex.refresh`) otherwise stats every known folder, ~3 µs each plus the
loop: 20,000 folders (a million files in folders of 50) cost ~0.2 s a tick whether anything
changed or not. With a watch armed, a scan lists only the folders the kernel reported (a file
created, closed after writing, deleted, moved or its attributes changed) and those still racy or
hot; the others are as their last listing saw them. A watch is kept per process (the sensor's
code server lives across ticks) and per drop; a process's first scan arms it (adds a watch to
every folder before stat-ing it), so nothing that happens after is missed.

Where inotify cannot be trusted the scan goes back to a ``stat`` per folder, and says so
(:attr:`FolderWatch.why_not`): a network file system (NFS, SMB, CephFS, FUSE ...: changes made
by another machine raise no event), the watch limit (``fs.inotify.max_user_watches``) reached, a
queue overflow (more events between two scans than ``fs.inotify.max_queued_events``: that scan
stats every folder and arms again), a watched folder moved. The periodic full re-stat
(``full_rescan_s``) stays the safety net. ``RT_DROP_WATCH=0`` turns watching off (the
``dicom_drop`` resource's ``watch``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
import threading
from pathlib import Path

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_DONT_FOLLOW = 0x02000000
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
#: what marks a folder changed. Not IN_MODIFY: a copy raises it for every block written (the queue
#: would overflow); a file being written is seen at its creation, and its folder stays hot until
#: a listing finds it unchanged (see rt_resources.ingest.index).
MASK = IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
#: file systems whose changes made elsewhere raise no inotify event here
REMOTE_FS = {
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "9p", "afs", "ncpfs",
    "davfs", "beegfs", "ocfs2", "gfs2", "virtiofs", "panfs",
}  # fmt: skip
_EVENT = struct.Struct("iIII")


def filesystem_type(path: Path) -> str:
    """The type of the file system holding ``path`` (``/proc/self/mountinfo``); "" when unknown."""
    path = os.path.realpath(path)
    best, kind = "", ""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if len(fields) < 5 or not tail:
            continue
        mount = fields[4].replace("\\040", " ")
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, tail.split()[0]
    return kind


class FolderWatch:
    """inotify watches on the folders of one drop, read without blocking at each scan."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.pid = os.getpid()
        self.lock = threading.Lock()  # one scan at a time in this process reads the queue
        self.fd: int | None = None
        self.wd_rel: dict[int, str] = {}
        self.rel_wd: dict[str, int] = {}
        self.armed = False  #: every known folder was watched before its last stat or listing
        self.index_id = ""  #: the index it was armed for (a rebuilt index arms it again)
        self.unwatched: set[str] = set()  #: folders whose watch could not be added: stat-ed every scan
        self.why_not = ""  #: why this drop is not watched ("" : it is, or can be)
        fs = filesystem_type(self.root)
        if fs in REMOTE_FS or fs.startswith("fuse"):
            self.why_not = f"the drop is on a {fs} file system: changes made by other machines raise no event"
            return
        self._libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        self._open()

    def _open(self) -> None:
        fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if fd < 0:
            self.why_not = f"inotify_init1 failed: {os.strerror(ctypes.get_errno())}"
        else:
            self.fd = fd

    @property
    def usable(self) -> bool:
        return self.fd is not None and not self.why_not

    def add(self, rel: str) -> bool:
        """Watch folder ``rel`` (before it is stat-ed or listed); False when it cannot be watched.
        Asks the kernel each time: a folder moved away and another put under its name has a new
        watch, and the old one (on the folder that moved) is dropped."""
        if not self.usable:
            return False
        folder = self.root if rel == "." else self.root / rel
        wd = self._libc.inotify_add_watch(self.fd, os.fsencode(folder), MASK | IN_ONLYDIR | IN_DONT_FOLLOW)
        if wd < 0:
            err = ctypes.get_errno()
            if err == errno.ENOSPC:
                self.why_not = "the inotify watch limit was reached (raise fs.inotify.max_user_watches)"
                self.close()
            else:
                self.unwatched.add(rel)
            return False  # gone or unreadable now: the scan handles the folder without a watch
        before = self.rel_wd.get(rel)
        if before is not None and before != wd:  # the name now holds another folder
            self.wd_rel.pop(before, None)
            self._libc.inotify_rm_watch(self.fd, before)
        old = self.wd_rel.get(wd)
        if old is not None and old != rel:  # the same folder under another name: it was moved
            self.rel_wd.pop(old, None)
        self.wd_rel[wd] = rel
        self.rel_wd[rel] = wd
        self.unwatched.discard(rel)
        return True

    def watched(self, rel: str) -> bool:
        return rel in self.rel_wd

    def forget(self, rel: str) -> None:
        """Folder ``rel`` and the folders under it are gone from the drop."""
        prefix = rel + "/"
        self.unwatched = {r for r in self.unwatched if not (r == rel or r.startswith(prefix))}
        for name in [r for r in self.rel_wd if r == rel or r.startswith(prefix)]:
            wd = self.rel_wd.pop(name)
            self.wd_rel.pop(wd, None)
            if self.fd is not None:
                self._libc.inotify_rm_watch(self.fd, wd)

    def changed(self) -> tuple[set[str], bool]:
        """Folders with an event since the last call (a folder created, deleted or moved shows as
        its parent's event), and whether that is all of them: not when events were lost (queue
        overflow) or a watched folder moved. Then every folder must be stat-ed (the folders named
        are still listed: an overwrite in place among them shows in no stat), and the watch starts
        afresh, armed again by that scan."""
        folders: set[str] = set()
        lost = False
        while self.fd is not None:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                break
            offset = 0
            while offset + _EVENT.size <= len(data):
                wd, mask, _cookie, length = _EVENT.unpack_from(data, offset)
                offset += _EVENT.size + length
                rel = self.wd_rel.get(wd)
                if mask & IN_Q_OVERFLOW or mask & IN_MOVE_SELF:
                    lost = True
                elif mask & IN_IGNORED:  # its folder is gone (the parent's IN_DELETE says so)
                    if rel is not None:
                        self.wd_rel.pop(wd, None)
                        if self.rel_wd.get(rel) == wd:
                            del self.rel_wd[rel]
                elif rel is not None:
                    folders.add(rel)
        if lost:
            self.reset()
        return folders, not lost

    def reset(self) -> None:
        """Drop every watch (some may name folders that moved): the next scan stats every folder
        and arms a new watch."""
        self.close()
        self._open()

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None
        self.armed = False
        self.wd_rel.clear()
        self.rel_wd.clear()
        self.unwatched.clear()


_WATCHES: dict[tuple[str, str], FolderWatch] = {}
_WATCHES_LOCK = threading.Lock()


def watch_for(root: Path, index: Path) -> FolderWatch:
    """This process's watch of drop ``root`` for the index at ``index`` (made on first use: each
    index reads its own events)."""
    key = (str(Path(root).resolve()), str(index))
    with _WATCHES_LOCK:
        watch = _WATCHES.get(key)
        if watch is None or watch.pid != os.getpid():  # a forked child never reads its parent's queue
            watch = _WATCHES[key] = FolderWatch(Path(key[0]))
        return watch
