"""Masks exported as an RTSTRUCT come back voxel for voxel, for any patient position.

The round trip is: mask on the CT grid -> export_rtstruct -> read_rois -> rasterize_contours
onto the CT -> compare with the mask. The shapes are chosen so that any flip, rotation,
transposition or slice-order error changes them: an L-shaped block near one corner whose
arm exists on some of its slices only, off-centre in z, and an off-centre sphere. At the
clinical in-plane size (512 x 512) the shapes add holes, an island in a hole, the image edge
and pixels touching only diagonally. The output must not depend on how the work is split
(pool workers, masks read in slabs), and rt-utils must read it back.

Tolerance: exact voxel equality. The exporter writes the 0.5 iso-line of each slice, whose
vertices lie midway between inside and outside voxel centres, so no voxel centre is within
half a voxel of a contour and the "centre inside" rasterizer cannot tip either way (float
error in mm is ~1e-12 voxel). The Dice >= 0.98 and centroid (< half a voxel) checks are kept
as the stated acceptance criteria; exactness is the stronger claim.
"""

from __future__ import annotations

import hashlib
import warnings
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


def write_reoriented(exported, folder: Path, order=(1, 0, 2)) -> tuple[Path, dict[str, Path]]:
    """The CT image and the Block and Sphere masks with their axes permuted and flipped (same voxels in space)."""
    ct, arrays = exported["ct"], exported["arrays"]
    ct_nii = folder / "ct.nii.gz"
    sitk.WriteImage(sitk.Flip(sitk.PermuteAxes(ct, list(order)), [False, True, True]), str(ct_nii))
    masks = {}
    for name in ("Block", "Sphere"):
        image = sitk.GetImageFromArray(arrays[name])
        image.CopyInformation(ct)
        image = sitk.Flip(sitk.PermuteAxes(image, list(order)), [False, True, True])
        masks[name] = folder / f"{name}.nii.gz"
        sitk.WriteImage(image, str(masks[name]))
    return ct_nii, masks


def test_any_axis_order_of_the_ct_image_gives_the_same_structures(exported, tmp_path):
    """The NIfTI may run its axes in another order or direction: the geometry decides, not the array layout."""
    ct, arrays = exported["ct"], exported["arrays"]
    ct_nii, masks = write_reoriented(exported, tmp_path)
    out = export_rtstruct(masks, exported["ct_paths"], ct_nii, tmp_path / "out" / "RS.dcm")
    back = round_trip(out, ct)  # rasterized on the original CT grid
    for name in ("Block", "Sphere"):
        assert int((back[name] != arrays[name]).sum()) == 0, name


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1)])
def test_masks_read_in_slabs_give_the_same_structures(exported, tmp_path, monkeypatch, order):
    """Masks are read a few slices at a time (along the slices, whichever image axis runs along them)."""
    from rt_resources.structures import export

    monkeypatch.setattr(export, "SLAB_BYTES", 3 * ROWS * ROWS)  # 3 slices: 7 slabs
    ct_nii, masks = write_reoriented(exported, tmp_path, order)
    out = export_rtstruct(masks, exported["ct_paths"], ct_nii, tmp_path / "out" / "RS.dcm")
    back = round_trip(out, exported["ct"])
    for name in ("Block", "Sphere"):
        assert int((back[name] != exported["arrays"][name]).sum()) == 0, name


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


def test_roi_items_are_written_as_rt_utils_writes_them(exported):
    ds = pydicom.dcmread(exported["out"])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian  # no 64 KiB limit on ContourData
    assert [int(r.ROINumber) for r in ds.StructureSetROISequence] == [1, 2]
    assert {r.ROIGenerationAlgorithm for r in ds.StructureSetROISequence} == {"AUTOMATIC"}
    assert [(int(o.ObservationNumber), int(o.ReferencedROINumber)) for o in ds.RTROIObservationsSequence] == [
        (1, 1),
        (2, 2),
    ]
    assert {o.RTROIInterpretedType for o in ds.RTROIObservationsSequence} == {"ORGAN"}
    assert [int(r.ReferencedROINumber) for r in ds.ROIContourSequence] == [1, 2]
    assert [list(r.ROIDisplayColor) for r in ds.ROIContourSequence] == [[255, 0, 255], [0, 235, 235]]
    for roi_contour in ds.ROIContourSequence:
        for contour in roi_contour.ContourSequence:
            assert contour.ContourGeometricType == "CLOSED_PLANAR"
            assert all(len(str(v)) <= 16 for v in contour.ContourData)


def test_rt_utils_reads_the_rtstruct_back(exported):
    """rt-utils (the other reader in use) opens it against the CT folder and rasterizes every ROI.

    Its rasterizer rounds vertices to pixel indices (cv2.fillPoly), not the centre-inside rule, so
    it gives the mask plus part of its boundary ring: checked are the slices and the voxel count.
    """
    from rt_utils import RTStructBuilder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        rtstruct = RTStructBuilder.create_from(str(exported["ct_dir"]), str(exported["out"]))
        assert rtstruct.get_roi_names() == ["Block", "Sphere"]
        for name in ("Block", "Sphere"):
            mask = rtstruct.get_roi_mask_by_name(name)  # rt-utils' own (rows, columns, slices) layout
            expected = exported["arrays"][name]
            assert mask.shape == (ROWS, ROWS, SLICES)
            assert mask.any(axis=(0, 1)).sum() == expected.any(axis=(1, 2)).sum()
            assert expected.sum() <= mask.sum() <= 1.35 * expected.sum()


def test_a_ct_file_that_is_no_image_is_refused(exported, tmp_path):
    not_an_image = tmp_path / "RS.dcm"
    ds = pydicom.dcmread(exported["ct_paths"][0], stop_before_pixels=True)
    del ds.ImagePositionPatient
    ds.save_as(not_an_image)
    with pytest.raises(RTStructExportError, match=r"RS\.dcm: not an image of the CT series \(no ImagePositionPatient"):
        export_rtstruct(
            {"Block": exported["work"] / "Block.nii.gz"},
            [*exported["ct_paths"], not_an_image],
            exported["work"] / "ct.nii.gz",
            tmp_path / "out" / "RS.dcm",
        )


def test_mask_voxels_off_the_dicom_slices_are_left_out(exported, tmp_path):
    """A CT image larger than the series (padded): only voxels on the DICOM slices' pixels are outlined."""
    ct = exported["ct"]
    padded = sitk.ConstantPad(ct, [3, 0, 0], [0, 2, 1])  # 3 columns before, 2 rows after, 1 slice after
    sitk.WriteImage(padded, str(tmp_path / "ct.nii.gz"))
    mask = np.zeros(sitk.GetArrayViewFromImage(padded).shape, np.uint8)
    mask[SLICES - 4 :, 20:, :12] = 1  # reaches into the padding on three sides
    path = write_mask(mask, padded, tmp_path / "Corner.nii.gz")
    out = export_rtstruct({"Corner": path}, exported["ct_paths"], tmp_path / "ct.nii.gz", tmp_path / "out" / "RS.dcm")
    expected = np.zeros((SLICES, ROWS, ROWS), np.uint8)
    expected[SLICES - 4 :, 20:, :9] = 1  # the same voxels on the series' own grid
    assert int((round_trip(out, ct)["Corner"] != expected).sum()) == 0


# --------------------------------------------------------------------------- clinical in-plane size

BIG_ROWS, BIG_SLICES = 512, 20


def big_masks() -> dict[str, np.ndarray]:
    """Shapes at 512 x 512: holes (a ring, an island in its hole), the image edge, diagonal-only contacts."""
    k, j, i = np.mgrid[0:BIG_SLICES, 0:BIG_ROWS, 0:BIG_ROWS]
    r2 = (i - 300.0) ** 2 + (j - 220.0) ** 2
    ring = (r2 <= 90**2) & (r2 > 40**2) & (k >= 3) & (k <= 14)
    ring |= (r2 <= 15**2) & (k >= 6) & (k <= 10)  # an island inside the ring's hole
    tilted = ((i - 150) * 0.8 + (k - 10) * 6.0) ** 2 / 60**2 + ((j - 330) / 45.0) ** 2 + ((k - 10) / 7.0) ** 2 <= 1
    edge = np.zeros_like(ring)
    edge[2:17, 400:, :70] = True  # touches the last row and the first column
    edge[2:17, 450:490, 0:30] = False  # a hole open to the edge: a notch
    edge[8, BIG_ROWS - 1, 100:140] = True  # one-row strip on the edge of one slice
    checker = np.zeros_like(ring)
    checker[5:9, 100:120, 420:440] = ((i[5:9, 100:120, 420:440] + j[5:9, 100:120, 420:440]) % 2) == 0
    checker[5:9, 140:150, 420:430] = True
    return {
        "Ring": ring.astype(np.uint8),
        "Tilted": tilted.astype(np.uint8),
        "EdgeOrgan": (edge * 255).astype(np.uint8),  # any non-zero value is inside
        "Checker": checker.astype(np.uint8),
        "Empty": np.zeros((BIG_SLICES, BIG_ROWS, BIG_ROWS), np.uint8),
    }


@pytest.fixture(scope="module")
def big_case(tmp_path_factory):
    root = tmp_path_factory.mktemp("big")
    options = SynthOptions(rows=BIG_ROWS, slices=BIG_SLICES, pixel_mm=0.977, slice_mm=2.5)
    patient = write_patient(root / "data", 0, options)
    ct_paths = sorted((patient.folder / "course_1" / "CT").glob("*.dcm"))
    ct = read_ct_volume(validate_ct_series(ct_paths))
    work = root / "work"
    work.mkdir()
    ct_nii = work / "ct.nii.gz"
    sitk.WriteImage(ct, str(ct_nii))
    arrays = big_masks()
    masks = {name: write_mask(a, ct, work / f"{name}.nii.gz") for name, a in arrays.items()}
    out = export_rtstruct(masks, ct_paths, ct_nii, root / "out" / "RS.dcm", workers=1)
    return {"ct": ct, "ct_paths": ct_paths, "ct_nii": ct_nii, "arrays": arrays, "masks": masks, "out": out}


def test_clinical_size_masks_come_back_voxel_for_voxel(big_case):
    back = round_trip(big_case["out"], big_case["ct"])
    assert sorted(back) == ["Checker", "EdgeOrgan", "Ring", "Tilted"]
    for name, mask in back.items():
        expected = big_case["arrays"][name] != 0
        assert int((mask.astype(bool) != expected).sum()) == 0, name


#: what differs between two exports of the same masks: new UIDs, the time of writing
VOLATILE = (
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "InstanceCreationDate",
    "InstanceCreationTime",
    "SeriesDate",
    "SeriesTime",
    "StructureSetDate",
    "StructureSetTime",
)


def assert_same_dataset(a: Path, b: Path) -> None:
    one, two = pydicom.dcmread(a), pydicom.dcmread(b)
    for ds in (one, two):
        for keyword in VOLATILE:
            delattr(ds, keyword)
    assert one == two


def test_workers_give_the_same_dataset(big_case, tmp_path, monkeypatch, caplog):
    """The pool changes where the contours are traced, not what is written."""
    from rt_resources.structures import export

    monkeypatch.setattr(export, "MIN_MASKS_PER_WORKER", 1)  # a pool even for these few masks
    caplog.set_level("INFO", logger="rtpipeline.rtstruct_export")
    out = export_rtstruct(big_case["masks"], big_case["ct_paths"], big_case["ct_nii"], tmp_path / "RS.dcm", workers=2)
    assert "parallel rtstruct_export processing: 2 workers" in caplog.text
    assert_same_dataset(big_case["out"], out)


def test_slabs_give_the_same_dataset(big_case, tmp_path, monkeypatch):
    """Reading a mask a few slices at a time (this process) or whole (pool workers) changes nothing."""
    from rt_resources.structures import export

    monkeypatch.setattr(export, "SLAB_BYTES", 3 * BIG_ROWS * BIG_ROWS)  # 3 slices: 7 slabs
    out = export_rtstruct(big_case["masks"], big_case["ct_paths"], big_case["ct_nii"], tmp_path / "RS.dcm")
    assert_same_dataset(big_case["out"], out)


def test_a_mask_that_fails_fails_the_export_with_its_name(big_case, tmp_path, monkeypatch):
    from rt_resources.structures import export

    def unreadable(path, *args):
        raise OSError(f"{path}: cannot read")  # SimpleITK reads even truncated files, so pretend

    monkeypatch.setattr(export, "_mask_slabs", unreadable)
    with pytest.raises(RTStructExportError, match=r"mask Ring \(.*Ring\.nii\.gz\) failed: .*cannot read"):
        export_rtstruct(big_case["masks"], big_case["ct_paths"], big_case["ct_nii"], tmp_path / "RS.dcm")
    assert not (tmp_path / "RS.dcm").exists()


def _cycle_equal(a: np.ndarray, b: np.ndarray) -> bool:
    """Same closed polygon: equal vertex lists up to the starting vertex and the direction."""
    a, b = [tuple(p) for p in a], [tuple(p) for p in b]
    if len(a) != len(b) or b[0] not in a:
        return False
    start = a.index(b[0])
    turned = a[start:] + a[:start]
    return turned == b or [turned[0], *turned[:0:-1]] == b


def test_traced_outlines_are_marching_squares_iso_lines():
    """The crack tracer gives scikit-image's find_contours(0.5) (low fully connected), less collinear vertices."""
    from skimage.measure import find_contours

    from rt_resources.structures.export import _trace_iso_lines

    rng = np.random.default_rng(7)
    for _ in range(60):
        slices, rows, columns = (int(n) for n in rng.integers((1, 1, 1), (4, 14, 14)))
        mask = rng.random((slices, rows, columns)) < rng.uniform(0.2, 0.8)  # many saddles, holes, islands
        stack = np.pad(mask, ((0, 0), (1, 1), (1, 1)))
        slice_of, starts, vertices = _trace_iso_lines(stack)
        for s in range(slices):
            ours = [vertices[starts[n] : starts[n + 1]] for n in np.flatnonzero(slice_of == s)]
            reference = []
            for contour in find_contours(stack[s].astype(float), 0.5):
                contour = contour[:-1]  # closed: the first vertex is repeated
                turn = np.roll(contour, -1, 0) - contour
                before = np.roll(turn, 1, 0)
                straight = (before[:, 0] * turn[:, 1] == before[:, 1] * turn[:, 0]) & ((before * turn).sum(1) > 0)
                reference.append(contour[~straight])
            assert len(ours) == len(reference)
            for contour in ours:
                assert sum(_cycle_equal(contour, r) for r in reference) == 1
