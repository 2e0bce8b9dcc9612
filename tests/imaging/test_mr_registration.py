"""MR + rigid REG: the synthetic course links, the matrix reads back, masks land on the MR where they should."""

import argparse
import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
from rt_resources.imaging.mr_series import MRSeriesError, masks_on_mr, read_mr_volume
from rt_resources.imaging.registration import read_registration, sitk_transform, transform_between
from rt_resources.ingest.index import DropIndex
from rt_resources.ingest.linking import link_courses
from rt_resources.synthetic import (
    MR_LUNG,
    MR_NOISE,
    SynthOptions,
    add_cli_arguments,
    course_context,
    mr_from_ct_matrix,
    options_from_args,
    t1_intensity,
    write_patient,
)

OPTS = SynthOptions(rows=48, slices=24, pixel_mm=8, slice_mm=8, mr=True)


@dataclasses.dataclass
class MrCourse:
    drop: Path
    course: object  # SynthCourse
    ctx: object  # CourseContext

    @property
    def ct_paths(self) -> list[Path]:
        return sorted((self.course.folder / "CT").glob("CT_*.dcm"))

    @property
    def mr_paths(self) -> list[Path]:
        return sorted((self.course.folder / "MR").glob("MR_*.dcm"))

    @property
    def reg_path(self) -> Path:
        return self.course.folder / "REG.dcm"


def _write(drop: Path, options: SynthOptions) -> MrCourse:
    patient = write_patient(drop, 0, options)
    return MrCourse(drop, patient.courses[0], course_context(drop, 0, options, 1))


@pytest.fixture(scope="module")
def mr_course(tmp_path_factory) -> MrCourse:
    return _write(tmp_path_factory.mktemp("mrdrop"), OPTS)


def physical_points(image: sitk.Image) -> np.ndarray:
    """(slices, rows, cols, 3) patient coordinates (mm) of every voxel centre of ``image``."""
    nx, ny, nz = image.GetSize()
    k, j, i = np.indices((nz, ny, nx), dtype=float)
    steps = np.stack([i, j, k], axis=-1) * np.asarray(image.GetSpacing())
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    return np.asarray(image.GetOrigin()) + steps @ direction.T


def mask_on_ct(ct: sitk.Image, shape) -> sitk.Image:
    """Boolean mask of an analytic phantom shape on the CT grid (geometry copied from ``ct``)."""
    p = physical_points(ct)
    mask = sitk.GetImageFromArray(shape.contains(p[..., 0], p[..., 1], p[..., 2]).astype(np.uint8))
    mask.CopyInformation(ct)
    return mask


def centroid(mask: sitk.Image) -> np.ndarray:
    on = sitk.GetArrayFromImage(mask) > 0
    assert on.any()
    return physical_points(mask)[on].mean(axis=0)


# -- generator + linking -------------------------------------------------------------------


def test_mr_course_links_reg_and_mr_series(mr_course, tmp_path):
    c = mr_course.course
    assert c.mr_series_uid and c.reg_uid and len(c.mr_from_ct) == 16
    res = link_courses(DropIndex(tmp_path / "index", mr_course.drop).scan().entries, b"test-secret")
    assert not res.rejections
    (course,) = res.courses
    assert course.reg_uids == [c.reg_uid]
    assert course.other_series_uids == [c.mr_series_uid]
    assert course.ct_series_uid == c.ct_series_uid
    mr_files = course.files_of("MR")
    assert len(mr_files) == len(mr_course.mr_paths) > 0
    assert {f.header.for_uid for f in mr_files} == {c.mr_frame_of_reference_uid} != {c.frame_of_reference_uid}
    assert {f.header.patient_id for f in mr_files} == {c.patient_id}


def test_each_course_gets_its_own_mr_and_reg(tmp_path):
    patient = write_patient(tmp_path / "drop", 0, SynthOptions(rows=16, slices=6, mr=True, second_course=True))
    res = link_courses(DropIndex(tmp_path / "index", tmp_path / "drop").scan().entries, b"test-secret")
    assert not res.rejections
    linked = {c.for_uid: (c.reg_uids, c.other_series_uids) for c in res.courses}
    expected = {c.frame_of_reference_uid: ([c.reg_uid], [c.mr_series_uid]) for c in patient.courses}
    assert linked == expected and len({c.mr_frame_of_reference_uid for c in patient.courses}) == 2


def test_mr_series_header_and_geometry_differ_from_ct(mr_course):
    mr = pydicom.dcmread(mr_course.mr_paths[0])
    ct = pydicom.dcmread(mr_course.ct_paths[0])
    assert mr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and mr.Modality == "MR"
    assert mr.SeriesDescription == "MR T1 synthetic"
    assert mr.FrameOfReferenceUID != ct.FrameOfReferenceUID and mr.PatientID == ct.PatientID
    assert float(mr.PixelSpacing[0]) == pytest.approx(1.5 * float(ct.PixelSpacing[0]))
    assert mr.Rows < ct.Rows and mr.Columns < ct.Columns and mr.Rows != mr.Columns
    reg = pydicom.dcmread(mr_course.reg_path)
    assert reg.Modality == "REG" and reg.FrameOfReferenceUID == ct.FrameOfReferenceUID
    assert [i.FrameOfReferenceUID for i in reg.RegistrationSequence] == [
        ct.FrameOfReferenceUID,
        mr.FrameOfReferenceUID,
    ]
    assert len(reg.RegistrationSequence[1].ReferencedImageSequence) == len(mr_course.mr_paths)


def test_generator_is_deterministic_with_mr(tmp_path):
    small = SynthOptions(rows=16, slices=6, mr=True)
    a = write_patient(tmp_path / "a", 0, small).courses[0]
    b = write_patient(tmp_path / "b", 0, small).courses[0]
    for fa, fb in zip(a.files, b.files, strict=True):
        assert fa.path.read_bytes() == fb.path.read_bytes()


def test_cli_flag_and_default_without_mr(tmp_path):
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert options_from_args(parser.parse_args(["--out", "x", "--mr"])).mr is True
    assert options_from_args(parser.parse_args(["--out", "x"])).mr is False
    plain = write_patient(tmp_path, 0, SynthOptions(rows=16, slices=6)).courses[0]
    assert plain.mr_series_uid == plain.reg_uid == "" and plain.mr_from_ct == ()
    assert not (plain.folder / "MR").exists() and not (plain.folder / "REG.dcm").exists()


# -- registration ----------------------------------------------------------------------------


def test_registration_matrix_equals_ground_truth(mr_course):
    c = mr_course.course
    reg = read_registration(mr_course.reg_path)
    assert reg.reg_for_uid == c.frame_of_reference_uid
    assert reg.sop_instance_uid == c.reg_uid
    assert set(reg.matrices) == {c.frame_of_reference_uid, c.mr_frame_of_reference_uid}
    np.testing.assert_allclose(reg.matrices[c.frame_of_reference_uid], np.eye(4), atol=1e-12)
    truth = np.asarray(c.mr_from_ct).reshape(4, 4)
    np.testing.assert_allclose(truth, mr_from_ct_matrix())
    ct_to_mr = transform_between(reg, c.frame_of_reference_uid, c.mr_frame_of_reference_uid)
    np.testing.assert_allclose(ct_to_mr, truth, atol=1e-6, rtol=0)
    mr_to_ct = transform_between(reg, c.mr_frame_of_reference_uid, c.frame_of_reference_uid)
    np.testing.assert_allclose(mr_to_ct @ truth, np.eye(4), atol=1e-6)
    # the SimpleITK transform maps points exactly as the matrix does
    p = np.array([10.0, -20.0, 30.0])
    np.testing.assert_allclose(sitk_transform(ct_to_mr).TransformPoint(p.tolist()), (truth @ [*p, 1])[:3], atol=1e-9)


def _set_matrix(ds, values=None, kind=None):
    m = ds.RegistrationSequence[1].MatrixRegistrationSequence[0].MatrixSequence[0]
    if values is not None:
        m.FrameOfReferenceTransformationMatrix = [f"{v:g}" for v in values]
    if kind is not None:
        m.FrameOfReferenceTransformationMatrixType = kind


def _deformable(ds):
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.3"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID


BAD_REGS = {
    "deformable": (_deformable, "deformable"),
    "15 values": (lambda ds: _set_matrix(ds, list(np.eye(4).ravel())[:15]), "15 values"),
    "affine type": (lambda ds: _set_matrix(ds, kind="AFFINE"), "only RIGID"),
    "singular": (lambda ds: _set_matrix(ds, [0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 1]), "singular"),
    "scaled": (lambda ds: _set_matrix(ds, list(np.diag([2.0, 2.0, 2.0, 1.0]).ravel())), "not a rotation"),
    "no frame": (lambda ds: delattr(ds, "FrameOfReferenceUID"), "no top-level FrameOfReferenceUID"),
}


@pytest.mark.parametrize("case", list(BAD_REGS))
def test_bad_registration_is_refused_naming_the_file(mr_course, tmp_path, case):
    edit, message = BAD_REGS[case]
    ds = pydicom.dcmread(mr_course.reg_path)
    edit(ds)
    bad = tmp_path / f"bad_{case.replace(' ', '_')}.dcm"
    ds.save_as(bad)
    with pytest.raises(ValueError, match=message) as err:
        read_registration(bad)
    assert str(bad) in str(err.value)


def test_registration_without_the_needed_frame_is_refused(mr_course):
    reg = read_registration(mr_course.reg_path)
    with pytest.raises(ValueError, match="does not register frame of reference 1.2.3") as err:
        transform_between(reg, mr_course.course.frame_of_reference_uid, "1.2.3")
    assert str(mr_course.reg_path) in str(err.value)


# -- MR volume and masks on it ------------------------------------------------------------------


def test_mr_volume_matches_the_analytic_phantom(mr_course):
    mr = read_mr_volume(list(reversed(mr_course.mr_paths)))  # order comes from positions
    assert mr.GetPixelID() == sitk.sitkFloat32
    header = pydicom.dcmread(mr_course.mr_paths[0])
    assert mr.GetSize() == (header.Columns, header.Rows, len(mr_course.mr_paths))
    np.testing.assert_allclose(mr.GetSpacing(), (12.0, 12.0, 9.6), atol=1e-6)
    # every voxel is the phantom's T1 value at p_ct = inv(mr_from_ct) @ p_mr, within the noise
    p = physical_points(mr)
    ct_from_mr = np.linalg.inv(mr_from_ct_matrix())
    q = p @ ct_from_mr[:3, :3].T + ct_from_mr[:3, 3]
    expected = t1_intensity(mr_course.ctx.phantom, q[..., 0], q[..., 1], q[..., 2])
    assert np.abs(sitk.GetArrayFromImage(mr) - expected).max() <= MR_NOISE


def _check_placement(mc: MrCourse) -> None:
    c = mc.course
    ct = read_ct_volume(validate_ct_series(mc.ct_paths))
    mr = read_mr_volume(mc.mr_paths)
    reg = read_registration(mc.reg_path)
    ct_to_mr = transform_between(reg, c.frame_of_reference_uid, c.mr_frame_of_reference_uid)
    truth = np.asarray(c.mr_from_ct).reshape(4, 4)
    phantom = mc.ctx.phantom

    heart = mask_on_ct(ct, phantom.heart)
    on_mr = masks_on_mr(heart, mr, ct_to_mr)
    assert on_mr.GetPixelID() == sitk.sitkUInt8
    assert on_mr.GetSize() == mr.GetSize() and on_mr.GetOrigin() == mr.GetOrigin()
    c_ct = centroid(heart)
    expected = truth[:3, :3] @ c_ct + truth[:3, 3]
    assert np.linalg.norm(centroid(on_mr) - expected) <= max(mr.GetSpacing())
    # negative control: without the registration the heart is ~20 mm off
    assert np.linalg.norm(centroid(masks_on_mr(heart, mr, np.eye(4))) - expected) > 15.0

    lung = sitk.GetArrayFromImage(masks_on_mr(mask_on_ct(ct, phantom.lung_l), mr, ct_to_mr)) > 0
    values = sitk.GetArrayFromImage(mr)[lung]
    assert lung.sum() > 20
    assert abs(np.median(values) - MR_LUNG) <= MR_NOISE
    assert np.mean(np.abs(values - MR_LUNG) <= MR_NOISE) > 0.85


def test_masks_land_on_the_mr_where_the_registration_says(mr_course):
    _check_placement(mr_course)


def test_masks_land_on_the_mr_feet_first(tmp_path):
    _check_placement(_write(tmp_path, dataclasses.replace(OPTS, patient_position="FFS")))


def test_rescale_is_applied(mr_course, tmp_path):
    paths = []
    for i, src in enumerate(mr_course.mr_paths):
        ds = pydicom.dcmread(src)
        ds.RescaleSlope = "2" if i else "0.5"
        ds.RescaleIntercept = "-100"
        ds.save_as(tmp_path / src.name)
        paths.append(tmp_path / src.name)
    plain = sitk.GetArrayFromImage(read_mr_volume(mr_course.mr_paths))
    scaled = sitk.GetArrayFromImage(read_mr_volume(paths))
    np.testing.assert_allclose(scaled[1:], 2 * plain[1:] - 100)
    np.testing.assert_allclose(scaled[0], 0.5 * plain[0] - 100)


def test_mr_series_with_a_missing_slice_is_refused(mr_course, tmp_path):
    for src in mr_course.mr_paths:
        shutil.copy(src, tmp_path / src.name)
    (tmp_path / mr_course.mr_paths[5].name).unlink()
    with pytest.raises(MRSeriesError, match="MR series: 1 missing slice"):
        read_mr_volume(sorted(tmp_path.glob("MR_*.dcm")))


def test_non_mr_files_are_refused(mr_course):
    with pytest.raises(MRSeriesError, match="is not MR Image Storage") as err:
        read_mr_volume(mr_course.ct_paths)
    assert "CT_" in str(err.value)
