"""The drop index is incremental: a re-scan parses only new or changed files."""

import os

from rt_resources.ingest.index import DropIndex
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL, tree_digest


def test_rescan_parses_only_changes(drop, data_root):
    write_patient(drop, 0, SMALL)
    index = DropIndex(data_root / "index", drop)
    first = index.scan()
    n = len(first.entries)
    assert first.n_parsed == n > 10
    assert all(e.ok for e in first.entries)

    again = index.scan()
    assert again.n_parsed == 0 and len(again.entries) == n

    # a new file, a changed file and a removed file
    write_patient(drop, 1, SMALL)
    victim = sorted(drop.rglob("CT_0001.dcm"))[0]
    victim.unlink()
    changed = sorted(drop.rglob("RTPLAN_primary.dcm"))[0]
    os.utime(changed, ns=(0, changed.stat().st_mtime_ns + 10**9))
    third = index.scan()
    added = len(third.entries) - n + 1
    assert third.n_removed == 1
    assert third.n_parsed == added + 1


def test_index_lives_in_data_root_and_drop_is_untouched(drop, data_root):
    write_patient(drop, 0, SMALL)
    (drop / "notes.txt").write_text("not dicom")
    before = tree_digest(drop)
    DropIndex(data_root / "index", drop).scan()
    assert tree_digest(drop) == before
    assert list((data_root / "index").glob("drop-*.sqlite"))


def test_marker_is_not_a_file_but_a_folder_flag(drop, data_root):
    write_patient(drop, 0, SMALL)
    (drop / "patient_000" / "_COMPLETE").write_text("")
    scan = DropIndex(data_root / "index", drop).scan()
    assert "patient_000" in scan.complete_dirs
    assert not any(e.path.endswith("_COMPLETE") for e in scan.entries)


def test_parallel_read_equals_sequential(drop, data_root, monkeypatch):
    from rt_resources.ingest import index as index_module

    write_patient(drop, 0, SMALL)
    (drop / "bad.dcm").write_bytes(b"nope")
    sequential = DropIndex(data_root / "seq", drop, workers=1).scan()
    monkeypatch.setattr(index_module, "PARALLEL_MIN_FILES", 1)
    parallel = DropIndex(data_root / "par", drop, workers=2).scan()
    strip = lambda scan: [(e.path, e.sha256, e.header, e.error) for e in scan.entries]  # noqa: E731
    assert strip(parallel) == strip(sequential)
