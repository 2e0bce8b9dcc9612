"""Quick scans with an inotify watch: only folders with an event (and racy or hot ones) are looked
at, and the index stays what a full re-stat gives, through additions, overwrites in place, new
and deleted folders, moves, a lost event queue, and on file systems where inotify is not trusted."""

import os
import shutil
import time

import pytest

from rt_resources.ingest import watch as watch_module
from rt_resources.ingest.index import DropIndex
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL


class Clock:
    """Scan times ahead of every file's mtime and 10 s apart: nothing is racy (read when asked: a
    module imported long before its tests run must not hand out times from then)."""

    last = 0.0

    def __next__(self) -> float:
        self.last = max(time.time() + 100, self.last + 10)
        return self.last


clock = Clock()


def settle(index: DropIndex):
    """Refresh until nothing is hot (a folder changed is listed once more); the first refresh's result."""
    first = index.refresh(now=next(clock), full_rescan_s=1e9)
    index.refresh(now=next(clock), full_rescan_s=1e9)
    return first


def rows(index: DropIndex) -> dict:
    return {p: (e.size, e.mtime_ns, e.sha256) for p, e in index.load().items()}


def full_rows(tmp_path, drop) -> dict:
    """What a fresh full re-stat of the drop indexes (no watch)."""
    fresh = DropIndex(tmp_path / f"fresh-{next(clock)}", drop)
    fresh.refresh()
    return rows(fresh)


@pytest.fixture
def drop(tmp_path):
    root = tmp_path / "drop"
    for i in range(3):
        write_patient(root, i, SMALL)
    return root


@pytest.fixture
def index(tmp_path, drop):
    index = DropIndex(tmp_path / "state", drop, watch=True)
    first = index.refresh(now=next(clock), full_rescan_s=1e9)  # the first: full, arms the watch
    assert first.full and not first.watched
    settle(index)
    assert watch_module.watch_for(drop, index.path).armed
    return index


def test_an_unchanged_drop_is_not_stat_ed(index):
    quiet = index.refresh(now=next(clock), full_rescan_s=1e9)
    assert quiet.watched and quiet.n_listed == 0 and not quiet.changed and quiet.n_files == 45


def test_only_the_folder_with_an_event_is_listed(index, drop, tmp_path):
    ct = drop / "patient_001" / "course_1" / "CT"
    shutil.copy(ct / "CT_0001.dcm", ct / "copy.dcm")
    found = settle(index)
    assert found.watched and found.n_listed == 1 and found.n_parsed == 1
    assert rows(index) == full_rows(tmp_path, drop)


def test_an_overwrite_in_place_is_seen(index, drop, tmp_path):
    """A quick scan without a watch misses this until the next full re-stat (the folder's mtime
    does not move); the watch sees the file closed after writing."""
    plan = drop / "patient_002" / "course_1" / "RTPLAN_primary.dcm"
    data = plan.read_bytes()
    with open(plan, "r+b") as f:  # same path, same size: only the content and mtime change
        f.write(data[:-1] + bytes([data[-1] ^ 1]))
    found = settle(index)
    assert found.watched and found.n_parsed == 1
    assert rows(index) == full_rows(tmp_path, drop)


def test_new_nested_and_deleted_folders(index, drop, tmp_path):
    write_patient(drop / "new" / "deep", 7, SMALL)  # folders inside folders, created after arming
    found = settle(index)
    assert found.watched and found.n_parsed == 15
    assert rows(index) == full_rows(tmp_path, drop)

    shutil.rmtree(drop / "patient_000")  # a folder with subfolders goes
    gone = settle(index)
    assert gone.watched and gone.n_removed == 15 and gone.n_files == 45
    assert rows(index) == full_rows(tmp_path, drop)

    write_patient(drop / "new" / "deep", 8, SMALL)  # a folder whose parent is new too
    assert settle(index).n_parsed == 15
    assert rows(index) == full_rows(tmp_path, drop)


def test_a_moved_folder_disarms_and_the_next_scan_stats_everything(index, drop, tmp_path):
    os.rename(drop / "patient_001", drop / "renamed_001")
    moved = index.refresh(now=next(clock), full_rescan_s=1e9)
    assert not moved.watched  # the moved folder's watches name the old path: every folder is stat-ed
    assert rows(index) == full_rows(tmp_path, drop)
    settle(index)
    again = index.refresh(now=next(clock), full_rescan_s=1e9)
    assert again.watched and again.n_listed == 0  # armed again


def test_lost_events_fall_back_to_a_stat_per_folder(index, drop, tmp_path, monkeypatch):
    watch = watch_module.watch_for(drop, index.path)
    monkeypatch.setattr(watch, "changed", lambda: (set(), False))  # as a queue overflow reports it
    shutil.copy(drop / "patient_000" / "course_1" / "RTSTRUCT.dcm", drop / "patient_000" / "again.dcm")
    found = index.refresh(now=next(clock), full_rescan_s=1e9)
    assert not found.watched and found.n_parsed == 1
    assert rows(index) == full_rows(tmp_path, drop)


def test_a_rebuilt_index_is_scanned_whole(index, drop, tmp_path):
    for path in index.path.parent.glob(index.path.name + "*"):
        path.unlink()  # the index is gone; the process's watch is still armed for the old one
    again = index.refresh(now=next(clock), full_rescan_s=1e9)
    assert not again.watched and again.n_files == 45 and again.n_parsed == 45


def test_network_file_systems_turn_it_off(tmp_path, drop, monkeypatch):
    monkeypatch.setattr(watch_module, "filesystem_type", lambda path: "nfs4")
    remote = DropIndex(tmp_path / "remote", drop, watch=True)
    settle(remote)
    assert not remote.refresh(now=next(clock), full_rescan_s=1e9).watched
    assert "nfs4" in watch_module.watch_for(drop, remote.path).why_not


def test_the_setting_reaches_the_sensor_resource(monkeypatch):
    from rt_resources.resources import resource_configs
    from rt_resources.settings import load_settings

    monkeypatch.setenv("RT_DROP_WATCH", "0")
    assert resource_configs(load_settings())["dicom_drop"]["watch"] is False


def test_filesystem_type_reads_mountinfo():
    assert watch_module.filesystem_type(watch_module.Path("/proc/self")) == "proc"


# found by a review; each was a file missed until the next full re-stat


def test_a_folder_replaced_by_another_under_its_name_is_watched_anew(index, drop, tmp_path):
    shutil.copytree(drop / "patient_001", tmp_path / "incoming")  # a corrected re-send, prepared outside
    os.rename(drop / "patient_001", tmp_path / "old_001")
    os.rename(tmp_path / "incoming", drop / "patient_001")
    settle(index)
    ct = drop / "patient_001" / "course_1" / "CT"
    shutil.copy(ct / "CT_0001.dcm", ct / "late.dcm")
    assert settle(index).n_parsed == 1
    assert rows(index) == full_rows(tmp_path, drop)
    shutil.copy(ct / "CT_0001.dcm", tmp_path / "old_001" / "outside.dcm")  # no longer watched
    assert watch_module.watch_for(drop, index.path).changed() == (set(), True)


def test_a_folder_another_process_settled_is_watched_by_the_sensor(index, drop, tmp_path):
    other = DropIndex(index.path.parent, drop)  # a course step: the same index, no watch
    (drop / "p9" / "sub").mkdir(parents=True)
    plan = drop / "patient_000" / "course_1" / "RTPLAN_primary.dcm"
    shutil.copy(plan, drop / "p9" / "sub" / "a.dcm")
    settle(other)
    settle(index)
    shutil.copy(plan, drop / "p9" / "sub" / "b.dcm")
    assert settle(index).n_parsed == 1
    assert rows(index) == full_rows(tmp_path, drop)


def test_a_failed_scan_does_not_lose_its_events(index, drop, tmp_path, monkeypatch):
    from rt_resources.ingest import index as index_module

    ct = drop / "patient_001" / "course_1" / "CT"
    shutil.copy(ct / "CT_0001.dcm", ct / "new.dcm")

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(index_module, "read_entry_chunks", disk_full)
        with pytest.raises(OSError):
            index.refresh(now=next(clock), full_rescan_s=1e9)
    assert settle(index).n_parsed == 1
    assert rows(index) == full_rows(tmp_path, drop)


def test_events_read_before_an_overflow_are_still_listed(index, drop, tmp_path, monkeypatch):
    """An overwrite in place shows in no stat: the scan after an overflow lists the folders whose
    events it did read."""
    plan = drop / "patient_000" / "course_1" / "RTPLAN_primary.dcm"
    data = plan.read_bytes()
    with open(plan, "r+b") as f:
        f.write(data[:-1] + bytes([data[-1] ^ 1]))
    watch = watch_module.watch_for(drop, index.path)
    read = watch.changed
    monkeypatch.setattr(watch, "changed", lambda: (read()[0], False))
    found = index.refresh(now=next(clock), full_rescan_s=1e9)
    assert not found.watched and found.n_parsed == 1
