"""The link store, updated by what changed, equals a full re-link of the drop after every kind of
change: additions, removals, an overwritten file, a file that moves a series to another course, a
course split across folders, copies (identical and conflicting) and unusable files."""

import ast
import dataclasses
import inspect
import os
import shutil
from pathlib import Path

import pydicom
import pytest

from rt_resources.ingest import linking
from rt_resources.ingest.index import DropIndex
from rt_resources.ingest.link_state import LinkStore, links_digest
from rt_resources.ingest.linking import link_courses
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

SECRET = b"test-secret"
OPTS = dataclasses.replace(SMALL, slices=6)


class Drop:
    """A drop, its index and link store; :meth:`check` compares the store with a full re-link."""

    def __init__(self, root: Path, state: Path) -> None:
        self.root = root
        self.index = DropIndex(state, root)
        self.store = LinkStore(self.index, SECRET)

    def check(self):
        self.index.refresh()  # a full re-stat: an overwrite in place is seen
        update = self.store.update()
        full = link_courses(sorted(self.index.load().values(), key=lambda e: e.path), SECRET)
        got = self.store.result()
        assert [c.key for c in got.courses] == [c.key for c in full.courses]
        for mine, theirs in zip(got.courses, full.courses, strict=True):
            assert mine == theirs, mine.key
        assert got.rejections == full.rejections
        assert self.store.state() == links_digest(full)
        return update, full


def rewrite(path: Path, change) -> None:
    """Change a DICOM file in place (same path; its mtime moves on, as a real overwrite's does)."""
    ds = pydicom.dcmread(path)
    change(ds)
    before = path.stat().st_mtime_ns
    ds.save_as(path, enforce_file_format=True)
    os.utime(path, ns=(before + 10**9, before + 10**9))


def replace_uid(old: str, new: str):
    def change(ds):
        def swap(dataset, elem):
            if elem.VR == "UI" and elem.value == old:
                elem.value = new

        ds.walk(swap)

    return change


@pytest.fixture
def drop(tmp_path):
    root = tmp_path / "drop"
    write_patient(root, 0, dataclasses.replace(OPTS, mr=True))  # MR joined through a REG
    write_patient(root, 1, dataclasses.replace(OPTS, second_course=True))
    write_patient(root, 2, OPTS)
    return Drop(root, tmp_path / "state")


def course_of(result, series_uid: str):
    return next(c for c in result.courses if series_uid in c.other_series_uids + [c.ct_series_uid])


def test_incremental_links_equal_a_full_relink_after_each_change(drop, tmp_path):
    first, full = drop.check()
    assert first.rebuilt and len(full.courses) == 4
    root = drop.root

    write_patient(root, 3, OPTS)  # additions: a new course links alone
    update, full = drop.check()
    assert not update.rebuilt and update.n_relinked == 9 and update.n_courses == 1 and len(full.courses) == 5

    split = root / "later_export" / "p2"  # a course split across folders: plan objects elsewhere
    split.mkdir(parents=True)
    for name in ("RTSTRUCT.dcm", "RTPLAN_primary.dcm", "RTDOSE_primary.dcm"):
        shutil.move(root / "patient_002" / "course_1" / name, split / name)
    update, full = drop.check()
    assert update.n_courses == 1 and len(full.courses) == 5

    ct = root / "patient_000" / "course_1" / "CT" / "CT_0003.dcm"
    (root / "zz_copies").mkdir()
    shutil.copy(ct, root / "zz_copies" / "a.dcm")  # an identical copy after the used file: no relink
    update, full = drop.check()
    assert update.n_relinked == 0 and any("duplicate of" in r.reason for r in full.rejections)
    (root / "0_copies").mkdir()
    shutil.copy(ct, root / "0_copies" / "b.dcm")  # one before it: the used file changes
    update, full = drop.check()
    assert update.n_relinked > 0

    conflict = root / "conflict" / "x.dcm"  # same SOP Instance UID, other content: none is used
    conflict.parent.mkdir()
    shutil.copy(root / "patient_003" / "course_1" / "CT" / "CT_0004.dcm", conflict)
    rewrite(conflict, lambda ds: setattr(ds, "SeriesDescription", "edited"))
    _, full = drop.check()
    assert any("different content" in r.reason for r in full.rejections)

    dose = root / "patient_001" / "course_1" / "RTDOSE_primary.dcm"  # an overwrite in place
    before = {c.key: c.fingerprint for c in full.courses}
    rewrite(dose, lambda ds: setattr(ds, "DoseComment", "recomputed"))
    update, full = drop.check()
    assert update.n_courses == 1 and sum(before[c.key] != c.fingerprint for c in full.courses) == 1

    mr_series = pydicom.dcmread(root / "patient_000" / "course_1" / "MR" / "MR_0001.dcm").SeriesInstanceUID
    old_for = pydicom.dcmread(root / "patient_000" / "course_1" / "CT" / "CT_0001.dcm").FrameOfReferenceUID
    new_for = pydicom.dcmread(root / "patient_001" / "course_2" / "CT" / "CT_0001.dcm").FrameOfReferenceUID
    home = course_of(full, mr_series).key
    rewrite(root / "patient_000" / "course_1" / "REG.dcm", replace_uid(old_for, new_for))  # moves the MR
    update, full = drop.check()
    moved = course_of(full, mr_series)
    assert moved.key != home and moved.for_uid == new_for and update.n_courses == 2

    junk = root / "patient_003" / "course_1" / "CT" / "partial.dcm"  # an unusable file, then gone
    junk.write_bytes(b"DICM" + b"\0" * 20)
    _, full = drop.check()
    assert any(r.path.endswith("partial.dcm") for r in full.rejections)
    junk.unlink()
    drop.check()

    shutil.rmtree(root / "patient_001" / "course_2")  # removals: a whole folder, then copies
    update, full = drop.check()
    assert len(full.courses) == 4
    shutil.rmtree(root / "0_copies")
    shutil.rmtree(root / "conflict")
    _, full = drop.check()
    assert not any("different content" in r.reason for r in full.rejections)

    cold = LinkStore(DropIndex(tmp_path / "cold", root), SECRET)  # built from scratch: the same
    cold.index.refresh()
    assert cold.update().rebuilt
    assert without_scan_times(cold.result()) == without_scan_times(drop.store.result())
    assert cold.state() == drop.store.state()


def without_scan_times(result):
    """A link result with every file's seen_at (when a scan saw it: differs between indexes) blanked."""
    for course in result.courses:
        course.files = [dataclasses.replace(f, seen_at=0.0) for f in course.files]
    return result


def test_a_long_change_log_rebuilds(drop, monkeypatch):
    drop.check()
    monkeypatch.setattr("rt_resources.ingest.link_state.REBUILD_DIRTY", 5)
    before = drop.store.token()
    write_patient(drop.root, 3, OPTS)  # 9 of 45 files: not a fifth of the index, applied row by row
    assert not drop.check()[0].rebuilt
    monkeypatch.setattr("rt_resources.ingest.link_state.REBUILD_FRACTION", 0.1)
    write_patient(drop.root, 4, OPTS)
    update, _ = drop.check()
    assert update.rebuilt and update.n_changed_paths == 9
    # the courses whose content is unchanged keep their version: only the two new ones changed since
    assert len(drop.store.changed_since(before)) == 2


def test_link_tokens_cover_every_field_the_linker_reads():
    """A rule joining files through a header field the tokens miss would make the incremental
    links wrong: every ``info.get("...")`` the linker reads is a token field."""
    tree = ast.parse(inspect.getsource(linking))
    read = {
        node.args[0].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "get"
        and isinstance(node.func.value, ast.Attribute | ast.Name)
        and getattr(node.func.value, "attr", getattr(node.func.value, "id", "")) == "info"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    read |= {"ref_struct_uids", "ref_plan_uids"}  # read through _attach_referencing's ref_field
    assert read and read <= set(linking.LINK_INFO_FIELDS), read - set(linking.LINK_INFO_FIELDS)


def test_missing_uids_join_as_the_linker_joins_them(tmp_path, monkeypatch):
    """Two courses of one patient whose CTs lack StudyInstanceUID are one course to the linker
    (same patient, same "" study): a change to one of them relinks both (found by a review: the
    store relinked one alone and lost the other's files; a build in batches crashed)."""
    monkeypatch.setattr("rt_resources.ingest.link_state.BUILD_BATCH", 5)
    root = tmp_path / "drop"
    write_patient(root, 1, dataclasses.replace(OPTS, second_course=True))
    for path in sorted(root.rglob("CT_*.dcm")):
        rewrite(path, lambda ds: delattr(ds, "StudyInstanceUID"))
    drop = Drop(root, tmp_path / "state")
    _, full = drop.check()
    assert len(full.courses) == 1
    rewrite(root / "patient_001" / "course_1" / "RTDOSE_primary.dcm", lambda ds: setattr(ds, "DoseComment", "new"))
    update, _ = drop.check()
    assert update.n_relinked == 18
