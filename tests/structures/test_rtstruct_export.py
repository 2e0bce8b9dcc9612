"""Masks exported as an RTSTRUCT (rt-utils) come back voxel for voxel, for any patient position.

The round trip is: mask on the CT grid -> export_rtstruct -> read_rois -> rasterize_contours
onto the CT -> compare with the mask. The shapes are chosen so that any flip, rotation,
transposition or slice-order error changes them: an L-shaped block near one corner whose
arm exists on some of its slices only, off-centre in z, and an off-centre sphere.

Tolerance: exact voxel equality. The exporter writes the 0.5 iso-line of each slice, whose
vertices lie midway between inside and outside voxel centres, so no voxel centre is within
half a voxel of a contour and the "centre inside" rasterizer cannot tip either way (float
error in mm is ~1e-12 voxel). The Dice >= 0.98 and centroid (< half a voxel) checks are kept
as the stated acceptance criteria; exactness is the stronger claim.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
from rt_resources.structures.export import RTStructExportError, export_rtstruct
from rt_resources.structures.rasterize import rasterize_contours
from rt_resources.structures.rtstruct import read_rois
from rt_resources.synthetic import SynthOptions, write_patient

ROWS, SLICES = 64, 20


def l_block() -> np.ndarray:
    m = np.zeros((SLICES, ROWS, ROWS), np.uint8)  # (z, y, x) on the CT grid
    m[3:9, 5:19, 6:14] = 1  # stem
    m[3:6, 5:10, 14:31] = 1  # arm, on the lower three slices only
    m[8, 16:19, 6:9] = 0  # a notch in one corner of the top slice
    return m


def sphere() -> np.ndarray:
    k, j, i = np.mgrid[0:SLICES, 0:ROWS, 0:ROWS]
    return (((i - 41) ** 2 + (j - 37) ** 2 + (k - 12) ** 2) <= 6.5**2).astype(np.uint8)


def write_mask(array: np.ndarray, ct: sitk.Image, path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.CopyInformation(ct)
    sitk.WriteImage(image, str(path))
    return path


def sha256_tree(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module", params=["HFS", "FFS", "HFP", "FFP"])
def exported(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    patient = write_patient(root / "data", 0, SynthOptions(rows=ROWS, slices=SLICES, patient_position=request.param))
    course = patient.courses[0]
    ct_dir = patient.folder / "course_1" / "CT"
    ct_paths = sorted(ct_dir.glob("*.dcm"))
    ct = read_ct_volume(validate_ct_series(ct_paths))
    work = root / "work"
    work.mkdir()
    ct_nii = work / "ct.nii.gz"
    sitk.WriteImage(ct, str(ct_nii))
    arrays = {"Block": l_block(), "Sphere": sphere(), "Empty": np.zeros((SLICES, ROWS, ROWS), np.uint8)}
    masks = {name: write_mask(a, ct, work / f"{name}.nii.gz") for name, a in arrays.items()}
    before = sha256_tree(ct_dir)
    out = export_rtstruct(masks, ct_paths, ct_nii, root / "out" / "RS_auto.dcm")
    return {
        "course": course,
        "ct_dir": ct_dir,
        "ct_paths": ct_paths,
        "ct": ct,
        "arrays": arrays,
        "before": before,
        "out": out,
        "work": work,
    }


def round_trip(path: Path, ct: sitk.Image) -> dict[str, np.ndarray]:
    return {roi.name: rasterize_contours(roi.contours, ct).mask for roi in read_rois(path)}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


@pytest.mark.parametrize("name", ["Block", "Sphere"])
def test_mask_comes_back_voxel_for_voxel(exported, name):
    expected = exported["arrays"][name]
    back = round_trip(exported["out"], exported["ct"])[name]
    assert dice(back, expected) >= 0.98
    np.testing.assert_allclose(np.argwhere(back).mean(axis=0), np.argwhere(expected).mean(axis=0), atol=0.5)
    assert int((back != expected).sum()) == 0, "exported contours do not give the mask back exactly"


def test_references_point_at_the_ct_and_names_are_kept(exported):
    course = exported["course"]
    ds = pydicom.dcmread(exported["out"])
    assert ds.Modality == "RTSTRUCT" and ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.481.3"
    assert ds.StudyInstanceUID == course.study_uid
    assert ds.SeriesDescription == "Auto-segmentation"
    (for_item,) = ds.ReferencedFrameOfReferenceSequence
    assert for_item.FrameOfReferenceUID == course.frame_of_reference_uid
    (study,) = for_item.RTReferencedStudySequence
    assert study.ReferencedSOPInstanceUID == course.study_uid
    (series,) = study.RTReferencedSeriesSequence
    assert series.SeriesInstanceUID == course.ct_series_uid
    ct_uids = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in exported["ct_paths"]}
    assert {str(i.ReferencedSOPInstanceUID) for i in series.ContourImageSequence} == ct_uids

    assert [r.ROIName for r in ds.StructureSetROISequence] == ["Block", "Sphere"]  # the empty mask is skipped
    assert {r.ReferencedFrameOfReferenceUID for r in ds.StructureSetROISequence} == {course.frame_of_reference_uid}
    assert [r.name for r in read_rois(exported["out"])] == ["Block", "Sphere"]


def test_each_contour_lies_on_the_slice_it_references(exported):
    ds = pydicom.dcmread(exported["out"])
    headers = {}
    for p in exported["ct_paths"]:
        h = pydicom.dcmread(p, stop_before_pixels=True)
        headers[str(h.SOPInstanceUID)] = h
    for roi_contour in ds.ROIContourSequence:
        for contour in roi_contour.ContourSequence:
            h = headers[str(contour.ContourImageSequence[0].ReferencedSOPInstanceUID)]
            iop = np.asarray(h.ImageOrientationPatient, float)
            normal = np.cross(iop[:3], iop[3:])
            points = np.asarray(contour.ContourData, float).reshape(-1, 3)
            assert contour.NumberOfContourPoints == len(points)
            np.testing.assert_allclose(points @ normal, np.dot(h.ImagePositionPatient, normal), atol=1e-3)


def test_ct_folder_is_untouched_and_no_temporary_file_is_left(exported):
    assert sha256_tree(exported["ct_dir"]) == exported["before"]
    assert [p.name for p in exported["out"].parent.iterdir()] == ["RS_auto.dcm"]


def test_any_axis_order_of_the_ct_image_gives_the_same_structures(exported, tmp_path):
    """The NIfTI may run its axes in another order or direction: the geometry decides, not the array layout."""
    ct, arrays = exported["ct"], exported["arrays"]
    reoriented = sitk.Flip(sitk.PermuteAxes(ct, [1, 0, 2]), [False, True, True])  # same voxels in space
    ct_nii = tmp_path / "ct.nii.gz"
    sitk.WriteImage(reoriented, str(ct_nii))
    masks = {}
    for name in ("Block", "Sphere"):
        image = sitk.GetImageFromArray(arrays[name])
        image.CopyInformation(ct)
        image = sitk.Flip(sitk.PermuteAxes(image, [1, 0, 2]), [False, True, True])
        masks[name] = tmp_path / f"{name}.nii.gz"
        sitk.WriteImage(image, str(masks[name]))
    out = export_rtstruct(masks, exported["ct_paths"], ct_nii, tmp_path / "out" / "RS.dcm")
    back = round_trip(out, ct)  # rasterized on the original CT grid
    for name in ("Block", "Sphere"):
        assert int((back[name] != arrays[name]).sum()) == 0, name


def test_mask_off_the_ct_grid_is_refused(exported, tmp_path):
    ct = exported["ct"]
    image = sitk.GetImageFromArray(exported["arrays"]["Block"])
    image.CopyInformation(ct)
    image.SetOrigin(tuple(np.add(ct.GetOrigin(), (2.5, 0, 0))))
    sitk.WriteImage(image, str(tmp_path / "shifted.nii.gz"))
    with pytest.raises(RTStructExportError, match="not on the CT image's grid"):
        export_rtstruct(
            {"Shifted": tmp_path / "shifted.nii.gz"},
            exported["ct_paths"],
            exported["work"] / "ct.nii.gz",
            tmp_path / "RS.dcm",
        )
    assert not (tmp_path / "RS.dcm").exists()


def test_ct_image_off_the_dicom_grid_is_refused(exported, tmp_path):
    ct = sitk.Image(exported["ct"])
    ct.SetOrigin(tuple(np.add(ct.GetOrigin(), (0, 0, 0.5 * ct.GetSpacing()[2]))))  # half a slice off
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    mask = write_mask(exported["arrays"]["Block"], ct, tmp_path / "Block.nii.gz")
    with pytest.raises(RTStructExportError, match="not on the image's grid"):
        export_rtstruct({"Block": mask}, exported["ct_paths"], tmp_path / "ct.nii.gz", tmp_path / "RS.dcm")


def test_writing_into_the_ct_folder_is_refused(exported):
    with pytest.raises(RTStructExportError, match="CT series' folder"):
        export_rtstruct(
            {"Block": exported["work"] / "Block.nii.gz"},
            exported["ct_paths"],
            exported["work"] / "ct.nii.gz",
            exported["ct_dir"] / "RS.dcm",
        )


def test_non_square_pixels(exported, tmp_path):
    """PixelSpacing is (row spacing, column spacing); rt-utils 1.2.7 swaps them (its issue #92)."""
    ct_dir = tmp_path / "CT"
    ct_dir.mkdir()
    for p in exported["ct_paths"]:  # a modified copy; the originals are never written
        ds = pydicom.dcmread(p)
        ds.PixelSpacing = [2.5, 5.0]  # rows 2.5 mm apart, columns 5 mm apart
        ds.save_as(ct_dir / p.name)
    ct_paths = sorted(ct_dir.glob("*.dcm"))
    ct = read_ct_volume(validate_ct_series(ct_paths))
    assert ct.GetSpacing()[:2] == (5.0, 2.5)
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    block = write_mask(exported["arrays"]["Block"], ct, tmp_path / "Block.nii.gz")
    out = export_rtstruct({"Block": block}, ct_paths, tmp_path / "ct.nii.gz", tmp_path / "out" / "RS.dcm")
    assert int((round_trip(out, ct)["Block"] != exported["arrays"]["Block"]).sum()) == 0
