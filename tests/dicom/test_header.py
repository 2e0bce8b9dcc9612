"""Header-only reads: classification and clear reasons for unusable files."""

from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import FileMetaDataset

from rt_resources.dicom import sop_classes as sc
from rt_resources.dicom.header import HeaderError, read_header
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL


@pytest.fixture
def course(drop):
    return write_patient(drop, 0, SMALL).courses[0]


def _file(course, kind: str) -> Path:
    return next(f.path for f in course.files if f.modality == kind)


@pytest.mark.parametrize("kind", ["CT", "RTSTRUCT", "RTPLAN", "RTDOSE"])
def test_classifies_by_sop_class(course, kind):
    rec = read_header(_file(course, kind).read_bytes())
    assert rec.kind == kind
    assert rec.sop_instance_uid
    assert rec.study_uid == course.study_uid


def test_rtstruct_frame_of_reference_comes_from_referenced_sequence(course):
    path = _file(course, "RTSTRUCT")
    assert "FrameOfReferenceUID" not in pydicom.dcmread(path)  # as real exports
    rec = read_header(path.read_bytes())
    assert rec.for_uid == course.frame_of_reference_uid
    assert rec.info["ref_series_uids"] == [course.ct_series_uid]
    assert rec.info["ref_study_uids"] == [course.study_uid]


def test_dose_and_plan_references(course):
    dose = read_header(_file(course, "RTDOSE").read_bytes())
    plan = read_header(_file(course, "RTPLAN").read_bytes())
    assert dose.info["ref_plan_uids"] == [plan.sop_instance_uid]
    assert plan.info["ref_struct_uids"] == [course.struct_uid]
    assert dose.info["summation_type"] == "PLAN" and dose.info["dose_units"] == "GY"


def test_non_dicom_is_named():
    with pytest.raises(HeaderError, match="not a DICOM file"):
        read_header(b"just some notes\n" * 20)


@pytest.mark.parametrize("keep", [0.5, 0.99])
def test_truncated_pixel_data(course, keep):
    data = _file(course, "CT").read_bytes()
    with pytest.raises(HeaderError, match="truncated"):
        read_header(data[: int(len(data) * keep)])


def test_truncated_rt_object(course):
    data = _file(course, "RTSTRUCT").read_bytes()
    with pytest.raises(HeaderError, match="truncated|corrupt|malformed"):
        read_header(data[: len(data) - 100])


def test_dicomdir_is_ignored_with_reason(tmp_path):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sc.MEDIA_STORAGE_DIRECTORY
    meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.FileSetID = "EXPORT"
    ds.save_as(tmp_path / "DICOMDIR", enforce_file_format=True)
    with pytest.raises(HeaderError, match="DICOMDIR"):
        read_header((tmp_path / "DICOMDIR").read_bytes())


def test_unsupported_class_says_so(course, tmp_path):
    ds = pydicom.dcmread(_file(course, "RTPLAN"))
    ds.SOPClassUID = sc.RT_BEAMS_RECORD
    ds.file_meta.MediaStorageSOPClassUID = sc.RT_BEAMS_RECORD
    ds.save_as(tmp_path / "record.dcm", enforce_file_format=True)
    with pytest.raises(HeaderError, match="Treatment Record"):
        read_header((tmp_path / "record.dcm").read_bytes())
