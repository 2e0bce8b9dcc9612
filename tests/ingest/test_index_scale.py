"""The index at archive scale: a cold scan reads and stores its files a chunk at a time, and a
full re-stat compares one folder's rows at a time (neither holds the whole index in memory)."""

import sqlite3

from rt_resources.ingest import index as index_module
from rt_resources.ingest.index import DropIndex
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL


def test_a_cold_scan_in_chunks_indexes_every_file(tmp_path, monkeypatch):
    drop = tmp_path / "drop"
    for i in range(3):
        write_patient(drop, i, SMALL)
    monkeypatch.setattr(index_module, "READ_CHUNK", 4)
    chunked = DropIndex(tmp_path / "chunked", drop)
    result = chunked.refresh()
    whole = DropIndex(tmp_path / "whole", drop)
    whole.refresh()
    assert result.n_parsed == 45 and chunked.load().keys() == whole.load().keys()
    assert int(chunked.token().split(":")[1]) >= 12  # each chunk a version: a killed scan says it changed


def test_a_full_restat_drops_rows_of_a_folder_no_scan_recorded(tmp_path):
    """A scan killed after a chunk of rows was stored, before its folders were: if that folder is
    gone by the next full re-stat, its rows go too."""
    drop = tmp_path / "drop"
    write_patient(drop, 0, SMALL)
    index = DropIndex(tmp_path / "state", drop)
    index.refresh()
    con = sqlite3.connect(index.path)
    with con:
        con.execute(
            "INSERT INTO files (path, size, mtime_ns, seen_at, sha256, error, dir) "
            "VALUES ('lost/x.dcm', 1, 1, 0, '', 'not DICOM', 'lost')"
        )
    con.close()
    again = index.refresh()
    assert again.n_removed == 1 and "lost/x.dcm" not in index.load()


def test_a_name_that_is_not_utf8_is_refused_not_fatal(tmp_path):
    """Found by a review: one such name made every refresh fail (SQLite stores text)."""
    import os

    drop = tmp_path / "drop"
    write_patient(drop, 0, SMALL)
    os.makedirs(os.fsencode(drop) + b"/bad\xff")
    (drop / "patient_000").joinpath(os.fsdecode(b"x\xfe.dcm")).write_bytes(b"DICM")
    index = DropIndex(tmp_path / "state", drop)
    index.refresh()
    entries = index.load()
    refused = {p: e.error for p, e in entries.items() if not e.ok}
    assert set(refused) == {"bad\\xff", "patient_000/x\\xfe.dcm"}
    assert all("not valid UTF-8" in why for why in refused.values())
    assert sum(e.ok for e in entries.values()) == 15 and not index.refresh().changed
