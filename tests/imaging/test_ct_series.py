"""ct.nii.gz geometry against the DICOM tags, and refusal of series that cannot be trusted."""

import dataclasses

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rt_resources.imaging.ct_series import CTSeriesError, read_ct_volume, validate_ct_series
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL


def ct_paths(drop):
    return sorted(drop.rglob("CT_*.dcm"))


@pytest.mark.parametrize("position", ["HFS", "FFS", "HFP", "FFP"])
def test_geometry_and_hu_match_dicom(drop, tmp_path, position):
    write_patient(drop, 0, dataclasses.replace(SMALL, patient_position=position))
    paths = ct_paths(drop)
    shuffled = paths[::-1]  # order must come from positions, not file names
    geometry = validate_ct_series(shuffled)
    image = read_ct_volume(geometry)
    out = tmp_path / "ct.nii.gz"
    sitk.WriteImage(image, str(out))
    back = sitk.ReadImage(str(out))

    headers = [pydicom.dcmread(p) for p in paths]
    iop = np.array(headers[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    headers.sort(key=lambda h: np.dot(np.array(h.ImagePositionPatient, float), normal))
    first = headers[0]
    np.testing.assert_allclose(back.GetOrigin(), np.array(first.ImagePositionPatient, float), atol=1e-4)
    dz = np.dot(np.array(headers[1].ImagePositionPatient, float) - np.array(first.ImagePositionPatient, float), normal)
    np.testing.assert_allclose(
        back.GetSpacing(), [float(first.PixelSpacing[1]), float(first.PixelSpacing[0]), dz], atol=1e-5
    )
    np.testing.assert_allclose(
        np.array(back.GetDirection()).reshape(3, 3), np.column_stack([iop[:3], iop[3:], normal]), atol=1e-6
    )
    # HU: every slice equals pydicom's rescaled pixels, at the right index
    arr = sitk.GetArrayFromImage(back)
    for k, h in enumerate(headers):
        hu = h.pixel_array * float(h.RescaleSlope) + float(h.RescaleIntercept)
        np.testing.assert_array_equal(arr[k], hu)
    # a voxel index maps to the same patient point in both
    i, j, k = 5, 7, 3
    h = headers[k]
    expected = (
        np.array(h.ImagePositionPatient, float)
        + i * iop[:3] * float(h.PixelSpacing[1])
        + j * iop[3:] * float(h.PixelSpacing[0])
    )
    np.testing.assert_allclose(back.TransformIndexToPhysicalPoint((i, j, k)), expected, atol=1e-4)
    assert back.GetPixelID() == sitk.sitkInt16


def test_missing_slice_is_refused_with_file_names(drop):
    write_patient(drop, 0, SMALL)
    paths = ct_paths(drop)
    del paths[5]
    with pytest.raises(CTSeriesError, match=r"1 missing slice\(s\) between .*CT_0005.dcm.* and .*CT_0007.dcm"):
        validate_ct_series(paths)


def _edit(path, **tags):
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


def test_gantry_tilt_is_refused(drop):
    write_patient(drop, 0, SMALL)
    paths = ct_paths(drop)
    _edit(paths[3], GantryDetectorTilt=15.0)
    with pytest.raises(CTSeriesError, match="gantry tilt 15"):
        validate_ct_series(paths)


def test_sheared_positions_are_refused(drop):
    write_patient(drop, 0, SMALL)
    paths = ct_paths(drop)
    for n, p in enumerate(paths):  # positions drift in y slice by slice: a tilt without the tag
        ipp = [float(v) for v in pydicom.dcmread(p).ImagePositionPatient]
        _edit(p, ImagePositionPatient=[ipp[0], ipp[1] + 2.0 * n, ipp[2]])
    with pytest.raises(CTSeriesError, match="perpendicular to the slice normal"):
        validate_ct_series(paths)


def test_mixed_orientation_is_refused(drop):
    write_patient(drop, 0, SMALL)
    paths = ct_paths(drop)
    _edit(paths[4], ImageOrientationPatient=[-1, 0, 0, 0, 1, 0])
    with pytest.raises(CTSeriesError, match="mixed orientation: .*CT_0005.dcm"):
        validate_ct_series(paths)


def test_two_slices_at_one_position_are_refused(drop):
    write_patient(drop, 0, SMALL)
    paths = ct_paths(drop)
    _edit(paths[4], ImagePositionPatient=pydicom.dcmread(paths[3]).ImagePositionPatient)
    with pytest.raises(CTSeriesError, match="same position"):
        validate_ct_series(paths)


def test_small_position_jitter_is_accepted_and_recorded(drop):
    """Real exports round positions (2.44/2.56 mm steps in a 2.5 mm series): not a missing slice."""
    write_patient(drop, 0, SMALL)
    paths = ct_paths(drop)
    for n, p in enumerate(paths):
        if n % 3 == 1:
            ipp = [float(v) for v in pydicom.dcmread(p).ImagePositionPatient]
            _edit(p, ImagePositionPatient=[ipp[0], ipp[1], ipp[2] + 0.3])
    geometry = validate_ct_series(paths)
    assert any("deviate up to" in n for n in geometry.notes)
    assert geometry.spacing_mm[2] == pytest.approx(SMALL.slice_mm, rel=0.02)
