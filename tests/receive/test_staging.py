"""Staging names and the index's blind spot for it."""

import re
import time

import pydicom

from rt_resources.ingest.index import COMPLETE_MARKER, RECEIVER_FOLDER, DropIndex, walk_drop
from rt_resources.receive.staging import StagingArea, is_valid_uid, new_association_id, sanitize_ae_title
from tests.receive.helpers import course_files


def test_only_real_uids_become_file_names():
    assert is_valid_uid("1.2.840.10008.5.1.4.1.1.2")
    assert is_valid_uid("2.25.0123")  # a leading zero, seen in real exports: tolerated
    for bad in ("", "..", ".", "1..2", ".1.2", "1.2.", "1.2/3", "../1.2", "1.2\\3", "1.2 3", "1.2.3a", "9" * 65):
        assert not is_valid_uid(bad), bad


def test_ae_titles_become_safe_folder_names():
    assert sanitize_ae_title("  TPS_1-A ") == "TPS_1-A"
    assert sanitize_ae_title("../../etc") == "______etc"
    assert sanitize_ae_title(".hidden") == "_hidden"
    assert sanitize_ae_title("   ") == "UNKNOWN_AE"


def test_association_ids_are_unique_and_sort_by_time():
    now = time.time()
    ids = [new_association_id(now + i) for i in range(3)] + [new_association_id(now + 2)]
    assert len(set(ids)) == 4
    assert sorted(ids[:3]) == ids[:3]
    assert re.fullmatch(r"\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{6}", ids[0])


def test_the_index_never_walks_the_receiver_folder_but_walks_other_hidden_folders(tmp_path, drop, data_root):
    files = course_files(tmp_path / "src")
    area = StagingArea(drop)
    area.prepare()
    staged = area.begin("TPS", "127.0.0.1:1234")
    for f in files:
        area.write_instance(staged, _uid_of(f), f.read_bytes())
    (staged.folder / COMPLETE_MARKER).write_text("")  # even a marker in staging is not seen
    hidden = drop / "export" / ".snapshot"
    hidden.mkdir(parents=True)
    (hidden / "ct.dcm").write_bytes(files[0].read_bytes())
    found, markers = walk_drop(drop)
    assert [rel for rel, _, _ in found] == ["export/.snapshot/ct.dcm"] and markers == set()
    assert list(DropIndex(data_root / "index", drop).scan().entries)[0].path == "export/.snapshot/ct.dcm"
    # a folder of that name below the drop root is someone's data: walked
    nested = drop / "site" / RECEIVER_FOLDER
    nested.mkdir(parents=True)
    (nested / "x.dcm").write_bytes(files[0].read_bytes())
    assert f"site/{RECEIVER_FOLDER}/x.dcm" in [rel for rel, _, _ in walk_drop(drop)[0]]


def _uid_of(path):
    return pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
