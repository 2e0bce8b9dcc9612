"""Linking by UIDs: what makes a course, and a reason for every file left out."""

import dataclasses
import shutil

import pydicom
import pytest

from rt_resources.ingest.course_keys import course_key
from rt_resources.ingest.index import DropIndex
from rt_resources.ingest.linking import link_courses
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

SECRET = b"test-secret"


def link(drop, data_root):
    return link_courses(DropIndex(data_root / "index", drop).scan().entries, SECRET)


def opts(**kw):
    return dataclasses.replace(SMALL, **kw)


def test_primary_and_boost_on_one_ct_are_one_course(drop, data_root):
    p = write_patient(drop, 0, opts(boost=True))
    res = link(drop, data_root)
    assert len(res.courses) == 1 and not res.rejections
    c = res.courses[0]
    synth = p.courses[0]
    assert c.ct_series_uid == synth.ct_series_uid
    assert c.for_uid == synth.frame_of_reference_uid
    assert sorted(c.plan_uids) == sorted(synth.plan_uids)
    assert sorted(c.dose_uids) == sorted(synth.dose_uids)
    assert c.struct_uids == [synth.struct_uid]
    assert c.key == course_key(synth.patient_id, synth.study_uid, SECRET)


def test_second_course_on_new_ct_is_another_course(drop, data_root):
    p = write_patient(drop, 0, opts(second_course=True))
    res = link(drop, data_root)
    assert len(res.courses) == 2
    assert {c.study_uid for c in res.courses} == {c.study_uid for c in p.courses}
    assert len({c.for_uid for c in res.courses}) == 2
    assert {c.patient_id for c in res.courses} == {p.patient_id}


def test_beam_doses_belong_to_their_plan(drop, data_root):
    p = write_patient(drop, 0, opts(beam_doses=True))
    res = link(drop, data_root)
    (c,) = res.courses
    assert len(c.dose_uids) == 4 == len(p.courses[0].dose_uids)
    summations = {f.header.info["summation_type"] for f in c.files_of("RTDOSE")}
    assert summations == {"BEAM"}


def test_ct_and_rtstruct_only_is_still_a_course(drop, data_root):
    write_patient(drop, 0, SMALL)
    for f in drop.rglob("RT*_primary.dcm"):
        f.unlink()
    (c,) = link(drop, data_root).courses
    assert c.struct_uids and not c.plan_uids and not c.dose_uids


def test_missing_ct_and_missing_plan_are_reported(drop, data_root):
    write_patient(drop, 0, SMALL)
    shutil.rmtree(next(drop.rglob("CT")))
    res = link(drop, data_root)
    assert res.courses == []
    reasons = {r.path.rsplit("/", 1)[-1]: r.reason for r in res.rejections}
    assert "CT series" in reasons["RTSTRUCT.dcm"] and "not in the drop" in reasons["RTSTRUCT.dcm"]
    assert "RTPLAN references RTSTRUCT" in reasons["RTPLAN_primary.dcm"]
    assert "RTDOSE references RTPLAN" in reasons["RTDOSE_primary.dcm"]


def test_rtstruct_linked_by_frame_of_reference_when_series_absent(drop, data_root):
    """Like the STS export: the structure set references an uncropped series not in the drop."""
    write_patient(drop, 0, SMALL)
    path = next(drop.rglob("RTSTRUCT.dcm"))
    ds = pydicom.dcmread(path)
    ref = ds.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    ref.SeriesInstanceUID = pydicom.uid.generate_uid()
    ds.save_as(path, enforce_file_format=True)
    res = link(drop, data_root)
    (c,) = res.courses
    assert any("linked to CT series" in n for n in c.notes)


def test_duplicates(drop, data_root):
    write_patient(drop, 0, SMALL)
    plan = next(drop.rglob("RTPLAN_primary.dcm"))
    (drop / "copy").mkdir()
    shutil.copy(plan, drop / "copy" / "same.dcm")
    ds = pydicom.dcmread(plan)
    ds.RTPlanLabel = "EDITED"
    ds.save_as(drop / "copy" / "edited.dcm", enforce_file_format=True)
    res = link(drop, data_root)
    reasons = {r.path: r.reason for r in res.rejections}
    assert "different content" in reasons["copy/edited.dcm"]
    assert "different content" in reasons["copy/same.dcm"]
    (c,) = res.courses
    assert c.plan_uids == []  # a conflicting plan is not silently picked
    assert any("RTDOSE references RTPLAN" in r for r in reasons.values())


def test_identical_copy_is_a_harmless_duplicate(drop, data_root):
    write_patient(drop, 0, SMALL)
    plan = next(drop.rglob("RTPLAN_primary.dcm"))
    shutil.copy(plan, drop / "zz_copy.dcm")
    res = link(drop, data_root)
    (c,) = res.courses
    assert len(c.plan_uids) == 1
    assert [r.path for r in res.rejections] == ["zz_copy.dcm"]
    assert "identical content" in res.rejections[0].reason


def test_fingerprint_follows_content_not_mtime(drop, data_root):
    write_patient(drop, 0, SMALL)
    first = link(drop, data_root).courses[0]
    for f in drop.rglob("*.dcm"):  # re-sent unchanged: new mtimes, same bytes
        f.write_bytes(f.read_bytes())
    again = link(drop, data_root).courses[0]
    assert again.fingerprint == first.fingerprint and again.key == first.key
    plan = next(drop.rglob("RTPLAN_primary.dcm"))
    ds = pydicom.dcmread(plan)
    ds.RTPlanLabel = "V2"
    ds.save_as(plan, enforce_file_format=True)
    changed = link(drop, data_root).courses[0]
    assert changed.key == first.key and changed.fingerprint != first.fingerprint


@pytest.mark.parametrize("pid", ["../../../tmp/x", "Doe^John 12/34"])
def test_course_key_is_a_pseudonym(drop, data_root, pid):
    write_patient(drop, 0, SMALL, patient_id=pid, patient_name="Doe^John")
    (c,) = link(drop, data_root).courses
    assert c.patient_id == pid
    assert c.key.startswith("c-") and len(c.key) == 14 and "/" not in c.key and "Doe" not in c.key
