"""The drop index's quick scans: only folders that changed are listed, and nothing is missed
(except a file overwritten in place in a settled folder, which the periodic full re-stat finds)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time

import pytest

from rt_resources.ingest.index import COMPLETE_MARKER, RACY_S, RECEIVER_FOLDER, DropIndex
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

FULL_S = 3600.0  #: seconds between full re-stats in these tests (time moves by the scans' ``now``)


class Clock:
    """The scans' ``now``: starts past the racy window of the files just written, moves by hand."""

    def __init__(self) -> None:
        self.t = time.time() + 2 * RACY_S

    def __call__(self, step: float = 1.0) -> float:
        self.t += step
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


def settled(drop, data_root, clock, hot_s: float = 0.0) -> DropIndex:
    """An index of ``drop`` whose folders have all settled: the next quick scan lists none."""
    index = DropIndex(data_root / "index", drop)
    first = index.refresh(now=clock(), full_rescan_s=FULL_S, hot_s=hot_s)
    assert first.full and first.changed
    # new folders are listed once more, until a listing more than hot_s after they appeared
    check = index.refresh(now=clock(hot_s + 1), full_rescan_s=FULL_S, hot_s=hot_s)
    assert not check.full and not check.changed and check.n_listed == check.n_dirs
    quiet = quick(index, clock, hot_s)
    assert quiet.n_listed == 0 and quiet.n_stat == 0 and not quiet.changed and quiet.token == first.token
    return index


def quick(index: DropIndex, clock: Clock, hot_s: float = 0.0):
    r = index.refresh(now=clock(), full_rescan_s=FULL_S, hot_s=hot_s)
    assert not r.full
    return r


def paths(index: DropIndex) -> set[str]:
    return set(index.load())


def test_unchanged_drop_lists_and_stats_nothing(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    write_patient(drop, 1, SMALL)
    index = settled(drop, data_root, clock)
    r = quick(index, clock)
    assert (r.n_files, r.n_dirs) == (30, 7)  # root, 2 patients, 2 courses, 2 CT folders
    scan = index.scan(now=clock(), full_rescan_s=FULL_S)  # the full contract: every entry
    assert len(scan.entries) == 30 and scan.n_parsed == 0 and not scan.full and scan.token == r.token


def test_file_added_to_unchanged_folder_is_found(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock)
    ct = next(drop.rglob("CT_0001.dcm"))
    shutil.copy(ct, ct.parent / "CT_9999.dcm")
    r = quick(index, clock)
    assert r.n_parsed == 1 and r.n_listed == 1 and r.changed
    assert "patient_000/course_1/CT/CT_9999.dcm" in paths(index)


def test_new_subfolder_with_files_is_found(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock)
    deep = drop / "patient_000" / "course_1" / "extra" / "deeper"
    deep.mkdir(parents=True)
    shutil.copy(next(drop.rglob("RTPLAN_primary.dcm")), deep / "plan_copy.dcm")
    write_patient(drop, 1, SMALL)  # and a new patient at the root
    r = quick(index, clock)
    assert r.n_parsed == 16 and not r.n_removed
    assert "patient_000/course_1/extra/deeper/plan_copy.dcm" in paths(index)
    assert len(paths(index)) == 31


def test_removed_file_and_removed_folder_disappear(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    write_patient(drop, 1, SMALL)
    index = settled(drop, data_root, clock)
    token = index.token()
    next((drop / "patient_000").rglob("CT_0003.dcm")).unlink()
    shutil.rmtree(drop / "patient_001")
    r = quick(index, clock)
    assert r.n_removed == 16 and r.n_parsed == 0 and r.token != token
    left = paths(index)
    assert len(left) == 14 and not any(p.startswith("patient_001/") for p in left)
    assert "patient_000/course_1/CT/CT_0003.dcm" not in left
    con = sqlite3.connect(index.path)
    assert not con.execute("SELECT path FROM dirs WHERE path LIKE 'patient_001%'").fetchall()


def test_renamed_folder(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock)
    (drop / "patient_000").rename(drop / "renamed")
    r = quick(index, clock)
    assert r.n_removed == 15 and r.n_parsed == 15
    assert {p.split("/")[0] for p in paths(index)} == {"renamed"}
    assert quick(index, clock).n_parsed == 0


def test_overwritten_in_place_is_found_by_the_full_restat(drop, data_root, clock):
    """A file rewritten in place (same path and size) leaves its folder untouched, so a quick scan
    trusts its row; the periodic full re-stat finds it. Setting the folder's mtime back with
    ``os.utime`` would not hide a change: that changes the folder's ctime, which is compared too."""
    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock)
    plan = next(drop.rglob("RTPLAN_primary.dcm"))
    folder_times = (plan.parent.stat().st_mtime_ns, plan.parent.stat().st_ctime_ns)
    old = index.load()["patient_000/course_1/RTPLAN_primary.dcm"]
    data = bytearray(plan.read_bytes())
    data[-1] ^= 0xFF
    with open(plan, "r+b") as f:  # in place: same inode, same size
        f.write(data)
    os.utime(plan, ns=(old.mtime_ns + 10**9, old.mtime_ns + 10**9))
    assert (plan.parent.stat().st_mtime_ns, plan.parent.stat().st_ctime_ns) == folder_times

    assert quick(index, clock).n_parsed == 0  # missed by the quick scan
    assert index.load()["patient_000/course_1/RTPLAN_primary.dcm"].sha256 == old.sha256

    due = index.refresh(now=clock(FULL_S), full_rescan_s=FULL_S)  # time moved on: the full re-stat is due
    assert due.full and due.n_parsed == 1 and due.n_stat == 15
    assert index.load()["patient_000/course_1/RTPLAN_primary.dcm"].sha256 != old.sha256

    with open(plan, "r+b") as f:  # again; full_rescan_s=0 re-stats every scan
        f.write(bytes(data[:-1]) + bytes([data[-1] ^ 0xFF]))
    os.utime(plan, ns=(old.mtime_ns + 2 * 10**9, old.mtime_ns + 2 * 10**9))
    scan = index.scan(now=clock(), full_rescan_s=0)
    assert scan.full and scan.n_parsed == 1
    assert {e.path: e for e in scan.entries}["patient_000/course_1/RTPLAN_primary.dcm"].sha256 == old.sha256


def test_receiver_folder_is_still_skipped(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    staging = drop / RECEIVER_FOLDER / "assoc-1"
    staging.mkdir(parents=True)
    ct = next(drop.rglob("CT_0001.dcm"))
    shutil.copy(ct, staging / "ct.dcm")
    index = settled(drop, data_root, clock)
    shutil.copy(ct, staging / "ct2.dcm")
    (drop / "sub" / RECEIVER_FOLDER).mkdir(parents=True)  # only the root's is the receiver's
    shutil.copy(ct, drop / "sub" / RECEIVER_FOLDER / "x.dcm")
    r = quick(index, clock)
    assert r.n_parsed == 1
    found = paths(index)
    assert f"sub/{RECEIVER_FOLDER}/x.dcm" in found
    assert not any(p.startswith(f"{RECEIVER_FOLDER}/") for p in found)
    full = index.scan(now=clock(), full_rescan_s=0)
    assert not any(e.path.startswith(f"{RECEIVER_FOLDER}/") for e in full.entries)


def test_complete_marker_added_later_is_seen(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    write_patient(drop, 1, SMALL)
    index = settled(drop, data_root, clock)
    token = index.token()
    (drop / "patient_001" / COMPLETE_MARKER).write_text("")
    r = quick(index, clock)
    assert r.markers_changed and r.changed and r.n_parsed == 0 and r.token != token
    scan = index.scan(now=clock(), full_rescan_s=FULL_S)
    assert scan.complete_dirs == {"patient_001"}
    assert not any(e.path.endswith(COMPLETE_MARKER) for e in scan.entries)
    (drop / "patient_001" / COMPLETE_MARKER).unlink()
    assert quick(index, clock).markers_changed
    assert index.markers() == set()


def test_racy_folder_is_listed_again(drop, data_root, clock):
    """A folder listed less than RACY_S after it changed may change again within the same
    timestamp on a coarse file system, unseen: the next scan lists it again, although that listing
    found nothing new. A folder listed later than that is trusted."""
    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock)
    folder = drop / "patient_000" / "course_1"
    (folder / "tmp.part").write_bytes(b"x")
    (folder / "tmp.part").unlink()  # the folder changed; its files did not
    at = folder.stat().st_ctime_ns / 1e9

    r = index.refresh(now=at + RACY_S / 2, full_rescan_s=FULL_S)
    assert r.n_listed == 1 and not r.changed  # its times changed: listed; nothing new, so not hot
    r = index.refresh(now=at + RACY_S * 5, full_rescan_s=FULL_S)
    assert r.n_listed == 1 and not r.changed  # its times did not change: listed because racy
    assert index.refresh(now=at + RACY_S * 6, full_rescan_s=FULL_S).n_listed == 0

    (folder / "tmp.part").write_bytes(b"x")
    (folder / "tmp.part").unlink()
    at = folder.stat().st_ctime_ns / 1e9
    assert index.refresh(now=at + RACY_S * 5, full_rescan_s=FULL_S).n_listed == 1  # listed well after: not racy
    assert index.refresh(now=at + RACY_S * 6, full_rescan_s=FULL_S).n_listed == 0


def test_hot_folder_is_watched_for_files_still_growing(drop, data_root, clock):
    """A file still being written grows in place; its folder is listed on every scan until a
    listing more than hot_s after the last change finds nothing new."""
    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock, hot_s=60)
    folder = drop / "patient_000" / "course_1"
    full = (folder / "RTPLAN_primary.dcm").read_bytes()
    with open(folder / "incoming.dcm", "wb") as f:
        f.write(full[:100])
    t = clock()
    assert index.refresh(now=t, full_rescan_s=FULL_S, hot_s=60).n_parsed == 1
    assert index.load()["patient_000/course_1/incoming.dcm"].error
    with open(folder / "incoming.dcm", "ab") as f:  # grows: the folder is untouched
        f.write(full[100:])
    r = index.refresh(now=t + 30, full_rescan_s=FULL_S, hot_s=60)
    assert r.n_listed == 1 and r.n_parsed == 1
    assert index.load()["patient_000/course_1/incoming.dcm"].ok
    assert index.refresh(now=t + 60, full_rescan_s=FULL_S, hot_s=60).n_listed == 1  # 30 s since the change
    assert index.refresh(now=t + 91, full_rescan_s=FULL_S, hot_s=60).n_listed == 1  # 61 s: settles
    assert index.refresh(now=t + 92, full_rescan_s=FULL_S, hot_s=60).n_listed == 0


def test_token_changes_whichever_process_scanned(drop, data_root, clock):
    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock)
    token = index.token()
    shutil.copy(next(drop.rglob("CT_0001.dcm")), drop / "new.dcm")
    other = DropIndex(data_root / "index", drop)  # e.g. an asset step's scan
    assert other.scan(now=clock()).n_parsed == 1
    r = quick(index, clock)
    assert not r.changed and r.token != token  # this refresh found nothing, the index changed


def test_index_of_an_earlier_version_is_kept(drop, data_root):
    """An index written before folders were tracked (no ``files.dir``) is migrated, not re-parsed."""
    write_patient(drop, 0, SMALL)
    index = DropIndex(data_root / "index", drop)
    index.scan()
    con = sqlite3.connect(index.path)
    with con:
        con.execute("DROP TABLE dirs")
        con.execute("DROP TABLE meta")
        con.execute("DROP INDEX files_dir")
        con.execute("ALTER TABLE files DROP COLUMN dir")
    con.close()
    again = DropIndex(data_root / "index", drop).scan(full_rescan_s=FULL_S)
    assert again.full and again.n_parsed == 0 and len(again.entries) == 15
    con = sqlite3.connect(index.path)
    assert con.execute("SELECT COUNT(*) FROM files WHERE dir IS NULL").fetchone() == (0,)


def test_a_folder_unreadable_for_a_moment_keeps_its_files(drop, data_root, clock, monkeypatch):
    """EACCES, ESTALE or EIO on a known folder is not its removal: its rows stay (no course loses
    files, so none is requested half), and it is listed again on the next scan."""
    import rt_resources.ingest.index as index_module

    write_patient(drop, 0, SMALL)
    index = settled(drop, data_root, clock)
    before = paths(index)
    folder = next(p for p in drop.rglob("*") if p.is_dir() and any(f.is_file() for f in p.iterdir()))
    rel = folder.relative_to(drop).as_posix()
    real = index_module.list_folder
    monkeypatch.setattr(index_module, "list_folder", lambda f: None if f == folder else real(f))
    (folder / "new.txt").write_text("x")  # its mtime changes: it must be listed
    r = index.refresh(now=clock(), full_rescan_s=0)  # a full re-stat too
    assert paths(index) == before and not r.n_removed
    monkeypatch.setattr(index_module, "list_folder", real)
    again = quick(index, clock)
    assert again.n_listed >= 1 and f"{rel}/new.txt" in paths(index)
