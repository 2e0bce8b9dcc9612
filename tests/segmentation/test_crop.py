"""Anatomical crop bounds from synthetic TotalSegmentator-like masks, on HFS and FFS grids."""

import numpy as np
import pytest
import SimpleITK as sitk

from rt_resources.segmentation.crop import (
    FEMORAL_HEAD_MM,
    REGIONS,
    LandmarkError,
    crop_bounds,
    crop_image,
    landmark_classes,
    slice_z_mm,
)

# 32 x 32 x 80 voxels of 2 x 2 x 3 mm; slice centres at z = 0, 3, ..., 237 mm for both positions.
NZ, DZ = 80, 3.0
Z_TOP = (NZ - 1) * DZ


def make_ct(position: str) -> sitk.Image:
    img = sitk.Image(32, 32, NZ, sitk.sitkInt16)
    img.SetSpacing((2.0, 2.0, DZ))
    if position == "HFS":
        img.SetDirection((1, 0, 0, 0, 1, 0, 0, 0, 1))
        img.SetOrigin((-31.0, -31.0, 0.0))
    else:  # FFS: rows run to patient right, slices run from head to feet (z decreasing with k)
        img.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, -1))
        img.SetOrigin((31.0, -31.0, Z_TOP))
    return img


def box(ct: sitk.Image, z_lo: float, z_hi: float) -> sitk.Image:
    """uint8 mask on ``ct``'s grid: a 10 x 10 voxel box on the slices with z in [z_lo, z_hi] mm."""
    z = slice_z_mm(ct)
    arr = np.zeros(ct.GetSize()[::-1], np.uint8)
    arr[(z >= z_lo) & (z <= z_hi), 10:20, 10:20] = 1
    mask = sitk.GetImageFromArray(arr)
    mask.CopyInformation(ct)
    return mask


def empty(ct: sitk.Image) -> sitk.Image:
    return box(ct, 1e9, 1e9)


@pytest.fixture(params=["HFS", "FFS"])
def ct(request):
    return make_ct(request.param)


def k_of(ct, z_mm):
    return int(np.argmin(np.abs(slice_z_mm(ct) - z_mm)))


def test_slice_z_follows_the_direction(ct):
    z = slice_z_mm(ct)
    assert sorted(np.round(z, 6)) == [3.0 * k for k in range(NZ)]
    assert z[0] == (0.0 if ct.GetDirection()[8] > 0 else Z_TOP)


def test_pelvis_bounds_use_the_femoral_heads(ct):
    # femurs start at the scan edge (z = 0) as TotalSegmentator's femur masks usually do
    masks = {
        "vertebrae_L1": box(ct, 180, 201),
        "femur_left": box(ct, 0, 120),
        "femur_right": box(ct, 0, 117),
    }
    b = crop_bounds("pelvis", masks, ct)
    # heads: left = lowest centre within 50 mm of its top 120 -> 72; right: top 117 -> 69; lowest = 69
    assert b.landmarks_mm == {"superior": 201.0, "inferior": 117.0 - 48.0}
    assert FEMORAL_HEAD_MM == 50.0
    assert b.z_max_mm == pytest.approx(211.0) and b.z_min_mm == pytest.approx(59.0)
    assert b.clamped == [] and b.notes == []
    assert b.z_min_mm > 0 + 50  # well above the scan edge where the femurs end
    lo, hi = sorted((k_of(ct, 60.0), k_of(ct, 210.0)))
    assert b.index_range == (lo, hi + 1) and b.axis == 2

    cropped = crop_image(ct, b)
    assert cropped.GetSize() == (32, 32, 51)
    assert cropped.GetSpacing() == ct.GetSpacing() and cropped.GetDirection() == ct.GetDirection()
    zc = slice_z_mm(cropped)
    assert (zc.min(), zc.max()) == (60.0, 210.0)
    assert cropped.GetOrigin()[2] == (60.0 if ct.GetDirection()[8] > 0 else 210.0)
    # a mask cropped with the same bounds keeps all of L1 and lines up with the cropped CT
    l1 = crop_image(masks["vertebrae_L1"], b)
    assert l1.GetOrigin() == cropped.GetOrigin() and l1.GetSize() == cropped.GetSize()
    assert sitk.GetArrayViewFromImage(l1).sum() == sitk.GetArrayViewFromImage(masks["vertebrae_L1"]).sum()


def test_pelvis_with_one_femur_notes_the_other(ct):
    masks = {"vertebrae_L1": box(ct, 180, 201), "femur_left": box(ct, 0, 120), "femur_right": empty(ct)}
    b = crop_bounds("pelvis", masks, ct)
    assert b.landmarks_mm["inferior"] == 72.0
    assert len(b.notes) == 1 and "femur_right" in b.notes[0]


def test_thorax_bounds_and_margin_override(ct):
    masks = {
        "clavicula_left": box(ct, 200, 220),
        "clavicula_right": box(ct, 201, 216),
        "lung_upper_lobe_left": box(ct, 150, 210),
        "lung_upper_lobe_right": box(ct, 150, 213),
        "lung_lower_lobe_left": box(ct, 120, 180),
        "lung_lower_lobe_right": box(ct, 126, 180),
    }
    b = crop_bounds("thorax", masks, ct)
    assert b.landmarks_mm == {"superior": 219.0, "inferior": 120.0}
    assert (b.z_min_mm, b.z_max_mm) == (110.0, 229.0)
    assert b.index_range[1] - b.index_range[0] == len(range(111, 229, 3))  # centres 111 .. 228
    # the absent middle lobe is noted; the lungs are still defined by the other lobes
    assert len(b.notes) == 1 and "lung_middle_lobe_right" in b.notes[0]

    b2 = crop_bounds("thorax", masks, ct, margins={"superior": 0, "inferior": 21})
    assert (b2.z_min_mm, b2.z_max_mm) == (99.0, 219.0)
    assert crop_image(ct, b2).GetSize()[2] == len(range(99, 220, 3))
    with pytest.raises(ValueError, match="unknown margin keys"):
        crop_bounds("thorax", masks, ct, margins={"sup": 3})


def test_clamping_is_recorded(ct):
    masks = {
        "clavicula_left": box(ct, 200, 234),  # 234 + 10 = 244: 7 mm beyond the last slice (237)
        "lung_lower_lobe_left": box(ct, 3, 180),  # 3 - 10 = -7: 7 mm beyond the first slice (0)
    }
    b = crop_bounds("thorax", masks, ct)
    assert (b.z_min_mm, b.z_max_mm) == (0.0, Z_TOP)
    assert b.index_range == (0, NZ)
    assert b.clamped == [
        "superior bound 7.0 mm beyond the image: clamped to 237.0 mm",
        "inferior bound 7.0 mm beyond the image: clamped to 0.0 mm",
    ]
    assert crop_image(ct, b).GetSize() == ct.GetSize()


def test_missing_landmarks_name_the_region_and_classes(ct):
    masks = {"vertebrae_L1": empty(ct), "femur_left": box(ct, 0, 120)}
    with pytest.raises(LandmarkError, match="'pelvis'.*vertebrae_L1") as err:
        crop_bounds("pelvis", masks, ct)
    assert err.value.region == "pelvis" and err.value.missing == ["vertebrae_L1"]

    with pytest.raises(LandmarkError) as err:
        crop_bounds("pelvis", {}, ct)
    assert err.value.missing == ["vertebrae_L1", "femur_left", "femur_right"]
    assert "femoral heads" in str(err.value)
    with pytest.raises(ValueError, match="unknown crop region"):
        crop_bounds("knee", {}, ct)


def test_masks_on_another_grid_are_measured_in_patient_z():
    ct = make_ct("HFS")
    # another orientation and slice spacing: FFS, 6 mm slices from z = 234 mm down
    coarse = sitk.Image(16, 16, 40, sitk.sitkUInt8)
    coarse.SetSpacing((4.0, 4.0, 6.0))
    coarse.SetDirection((-1, 0, 0, 0, 1, 0, 0, 0, -1))
    coarse.SetOrigin((31.0, -31.0, 234.0))
    masks = {"vertebrae_L1": box(coarse, 180, 198), "femur_left": box(coarse, 0, 120)}
    b = crop_bounds("pelvis", masks, ct)
    assert b.landmarks_mm == {"superior": 198.0, "inferior": 72.0}
    assert (b.z_min_mm, b.z_max_mm) == (62.0, 208.0)
    assert crop_image(masks["vertebrae_L1"], b).GetSize()[2] == len(range(66, 209, 6))


def test_region_classes_exist_in_totalsegmentator_v2():
    map_to_binary = pytest.importorskip("totalsegmentator.map_to_binary")
    names = set(map_to_binary.class_map["total"].values())
    for region in REGIONS:
        assert set(landmark_classes(region)) <= names, region
    assert "clavicula_left" in names and "clavicle_left" not in names
