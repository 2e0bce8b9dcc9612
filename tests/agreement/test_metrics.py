"""Agreement of two masks: analytic cases (shifted boxes) and a brute-force reference.

Acceptance: auto masks that are the manual ones shifted by a known distance give the analytic
Dice and surface distances within one voxel. For a cube of side L shifted by d along one axis
(d < L / 2), each surface sees the other at (areas of one direction, 6 L^2 in all):

* 0 on the four side faces where they coincide (4 L (L - d)), uniform in (0, d) on their
  non-overlapping strips (4 L d);
* d on the trailing face (L^2), and on the leading face (inside the other cube) the distance to
  the nearest side face capped at d: d on the inner (L - 2d)^2, t in a band of length 4 (L - 2t).

So HD = HD95 = d (more than 5 % of the surface lies at d), mean = (4 L d^2 + d L^2 + d (L - 2d)^2
- 8 d^3 / 3) / (6 L^2), and Dice = 1 - d / L (exact on the voxel lattice for a whole number of
voxels). Weighted by voxel count instead of area (the engine's convention; it matters on
anisotropic grids) the faces get other weights: see ``cube_shift_analytic``. The voxel surfaces
differ from the continuous ones by at most a voxel; the brute-force reference (scipy erosion +
k-d tree, no SimpleITK) checks the voxel values exactly.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from rt_resources.agreement.metrics import RESAMPLED_NOTE, AgreementError, agreement

L_MM = 40.0  # side of the test cubes


def box_mask(size, spacing_mm, lo_mm, hi_mm, origin_mm=(0.0, 0.0, 0.0), direction=None) -> sitk.Image:
    """A uint8 mask on the given grid: 1 where the voxel centre lies in [lo_mm, hi_mm) (patient x, y, z)."""
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float)
    image = sitk.Image([int(n) for n in size], sitk.sitkUInt8)
    image.SetSpacing([float(s) for s in spacing_mm])
    image.SetOrigin([float(o) for o in origin_mm])
    image.SetDirection([float(v) for v in direction.ravel()])
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")  # array order (z, y, x)
    index = np.stack([i, j, k], axis=-1).astype(float)
    centres = np.asarray(origin_mm) + (index * np.asarray(spacing_mm)) @ direction.T
    inside = np.all((centres >= np.asarray(lo_mm)) & (centres < np.asarray(hi_mm)), axis=-1)
    out = sitk.GetImageFromArray(inside.astype(np.uint8))
    out.CopyInformation(image)
    return out


def sphere_mask(size, spacing_mm, centre_mm, radii_mm, origin_mm=(0.0, 0.0, 0.0)) -> sitk.Image:
    """A uint8 (ellipsoid) mask: 1 where the voxel centre lies inside."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    x, y, z = (np.asarray(origin_mm) + np.stack([i, j, k], -1) * np.asarray(spacing_mm)).transpose(3, 0, 1, 2)
    (cx, cy, cz), (rx, ry, rz) = centre_mm, radii_mm
    inside = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0
    out = sitk.GetImageFromArray(inside.astype(np.uint8))
    out.SetSpacing([float(s) for s in spacing_mm])
    out.SetOrigin([float(o) for o in origin_mm])
    return out


def cube_shift_analytic(side_mm: float, shift_mm: float, side_weight: float = 1.0) -> dict[str, float]:
    """Dice and pooled surface distances of two cubes shifted along one axis (module docstring).
    ``side_weight``: weight per mm^2 of the four faces along the shift against the two across it
    (1: by area; the engine counts voxels, so 1 / 2.5 on a 1 x 1 x 2.5 mm grid shifted along z)."""
    s, d, w = side_mm, shift_mm, side_weight
    mean = (w * 2 * s * d**2 + d * s**2 + d * (s - 2 * d) ** 2 + 2 * s * d**2 - 8 * d**3 / 3) / (
        w * 4 * s**2 + 2 * s**2
    )
    return {"dice": 1 - d / s, "hd95_mm": d, "msd_mm": mean, "hd_max_mm": d}


def reference_distances(manual: sitk.Image, auto: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Directed distances (manual to auto, auto to manual) of surface voxels, masks on one grid:
    surface = mask minus its 6-connected erosion, distances centre to centre by k-d tree."""
    spacing = np.asarray(manual.GetSpacing())[::-1]  # (z, y, x)
    points = []
    for image in (manual, auto):
        arr = sitk.GetArrayFromImage(image).astype(bool)
        eroded = ndimage.binary_erosion(arr, ndimage.generate_binary_structure(3, 1), border_value=0)
        points.append(np.argwhere(arr & ~eroded) * spacing)
    manual_to_auto = cKDTree(points[1]).query(points[0])[0]
    auto_to_manual = cKDTree(points[0]).query(points[1])[0]
    return manual_to_auto, auto_to_manual


def assert_matches_reference(result, manual, auto) -> None:
    pooled = np.concatenate(reference_distances(manual, auto))
    assert result.hd95_mm == pytest.approx(np.percentile(pooled, 95), abs=1e-4)
    assert result.msd_mm == pytest.approx(pooled.mean(), abs=1e-4)
    assert result.hd_max_mm == pytest.approx(pooled.max(), abs=1e-4)


def assert_within_one_voxel(result, expected: dict[str, float], voxel_mm: float) -> None:
    assert result.dice == pytest.approx(expected["dice"], abs=voxel_mm / L_MM)  # Dice of a shift one voxel off
    for key in ("hd95_mm", "msd_mm", "hd_max_mm"):
        assert abs(getattr(result, key) - expected[key]) <= voxel_mm, key


# --------------------------------------------------------------------------- analytic shifts


def test_cube_shifted_along_x_matches_analytic():
    size, spacing = (64, 56, 56), (1.0, 1.0, 1.0)
    manual = box_mask(size, spacing, (8, 8, 8), (48, 48, 48))
    auto = box_mask(size, spacing, (12, 8, 8), (52, 48, 48))
    result = agreement(manual, auto)
    expected = cube_shift_analytic(L_MM, 4.0)
    assert result.dice == pytest.approx(0.9, abs=1e-12)
    assert result.hd_max_mm == pytest.approx(4.0, abs=1e-5)
    assert result.hd95_mm == pytest.approx(4.0, abs=1e-5)
    assert_within_one_voxel(result, expected, 1.0)
    assert_matches_reference(result, manual, auto)
    assert result.volume_ratio == pytest.approx(1.0)
    assert result.manual_cc == pytest.approx(64.0) and result.auto_cc == pytest.approx(64.0)
    assert result.note == ""


def test_anisotropic_spacing_shift_along_z():
    size, spacing = (56, 56, 28), (1.0, 1.0, 2.5)  # cube of 40 x 40 x 16 voxels, shifted 2 slices
    manual = box_mask(size, spacing, (8, 8, 10), (48, 48, 50))
    auto = box_mask(size, spacing, (8, 8, 15), (48, 48, 55))
    result = agreement(manual, auto)
    assert result.dice == pytest.approx(1 - 5.0 / L_MM, abs=1e-12)
    assert result.hd_max_mm == pytest.approx(5.0, abs=1e-5)
    assert result.hd95_mm == pytest.approx(5.0, abs=1e-5)
    assert_within_one_voxel(result, cube_shift_analytic(L_MM, 5.0), 2.5)  # by area: mean 1.68 mm, we give 2.64
    # the gap is the voxel counting (z faces weigh 2.5 times per mm^2), not an error: counted so, 2.60 mm
    assert result.msd_mm == pytest.approx(cube_shift_analytic(L_MM, 5.0, side_weight=1 / 2.5)["msd_mm"], abs=0.1)
    assert_matches_reference(result, manual, auto)


def test_identical_masks():
    mask = sphere_mask((40, 40, 30), (0.8, 0.8, 2.0), (16, 16, 30), (10, 8, 14))
    result = agreement(mask, mask)
    assert result.dice == 1.0
    assert (result.hd95_mm, result.msd_mm, result.hd_max_mm) == (0.0, 0.0, 0.0)
    assert result.volume_ratio == 1.0 and result.note == ""


def test_ellipsoids_match_brute_force_reference():
    size, spacing = (48, 44, 26), (0.9, 1.1, 2.5)
    manual = sphere_mask(size, spacing, (20, 24, 30), (12, 9, 18))
    auto = sphere_mask(size, spacing, (22.5, 22, 33), (10, 11, 15))
    result = agreement(manual, auto)
    assert_matches_reference(result, manual, auto)
    m = sitk.GetArrayFromImage(manual).astype(bool)
    a = sitk.GetArrayFromImage(auto).astype(bool)
    assert result.dice == pytest.approx(2 * np.count_nonzero(m & a) / (m.sum() + a.sum()))


def test_hd95_pools_both_directions():
    """A spurious blob on 6.6 % of the auto surface but 3.4 % of the pooled one: the pooled 95th
    percentile (ours, MedPy's) stays 0; the max of the directed ones (DeepMind's, MONAI's) does not."""
    size, spacing = (60, 30, 30), (1.0, 1.0, 1.0)
    manual = box_mask(size, spacing, (5, 5, 5), (25, 25, 25))
    blob = box_mask(size, spacing, (45, 10, 10), (51, 16, 16))
    auto = sitk.Or(manual, blob)
    result = agreement(manual, auto)
    manual_to_auto, auto_to_manual = reference_distances(manual, auto)
    directed = max(np.percentile(manual_to_auto, 95), np.percentile(auto_to_manual, 95))
    assert directed > 10.0
    assert result.hd95_mm == pytest.approx(np.percentile(np.concatenate([manual_to_auto, auto_to_manual]), 95))
    assert result.hd95_mm == 0.0
    assert result.hd_max_mm == pytest.approx(auto_to_manual.max())


# --------------------------------------------------------------------------- grids


def test_auto_on_coarser_grid_is_resampled_within_one_voxel():
    manual = box_mask((64, 56, 56), (1.0, 1.0, 1.0), (8, 8, 8), (48, 48, 48))
    auto = box_mask((32, 28, 28), (2.0, 2.0, 2.0), (12, 8, 8), (52, 48, 48), origin_mm=(0.3, -0.7, 0.9))
    result = agreement(manual, auto)
    assert result.note == RESAMPLED_NOTE
    assert_within_one_voxel(result, cube_shift_analytic(L_MM, 4.0), 2.0)
    assert result.auto_cc == pytest.approx(64.0)  # on its own grid: 20 x 20 x 20 voxels of 8 mm^3
    assert result.volume_ratio == pytest.approx(1.0)


def test_auto_with_other_directions_is_resampled_exactly():
    """Flipped and permuted axes on a lattice that hits the manual voxel centres: nothing changes."""
    manual = box_mask((64, 56, 56), (1.0, 1.0, 1.0), (8, 8, 8), (48, 48, 48))
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # columns: index axes in x, y, z
    auto = box_mask((56, 64, 56), (1.0, 1.0, 1.0), (12, 8, 8), (52, 48, 48), (63.0, 0.0, 0.0), direction)
    result = agreement(manual, auto)
    assert result.note == RESAMPLED_NOTE
    assert result.dice == pytest.approx(0.9, abs=1e-12)
    assert result.hd_max_mm == pytest.approx(4.0, abs=1e-5)
    assert_matches_reference(result, manual, box_mask((64, 56, 56), (1.0, 1.0, 1.0), (12, 8, 8), (52, 48, 48)))


def test_auto_on_a_subgrid_of_the_manual_lattice_is_not_resampled():
    manual = box_mask((64, 56, 56), (1.0, 1.0, 1.0), (8, 8, 8), (48, 48, 48))
    auto = box_mask((50, 45, 47), (1.0, 1.0, 1.0), (12, 8, 8), (52, 48, 48), origin_mm=(5.0, 3.0, 4.0))
    result = agreement(manual, auto)
    assert result.note == ""
    assert result.dice == pytest.approx(0.9, abs=1e-12)
    assert result.hd_max_mm == pytest.approx(4.0, abs=1e-5)


def test_auto_beyond_the_manual_image_is_kept():
    manual = box_mask((52, 52, 52), (1.0, 1.0, 1.0), (8, 8, 8), (48, 48, 48))
    auto = box_mask((90, 60, 60), (1.0, 1.0, 1.0), (24, 8, 8), (64, 48, 48), origin_mm=(-10.0, -4.0, -4.0))
    result = agreement(manual, auto)
    assert result.dice == pytest.approx(1 - 16.0 / L_MM, abs=1e-12)  # 12 mm of it lies beyond the manual image
    assert result.hd_max_mm == pytest.approx(16.0, abs=1e-5)


def test_masks_apart_on_overlapping_grids_are_scored():
    size, spacing = (70, 30, 30), (1.0, 1.0, 1.0)
    manual = box_mask(size, spacing, (10, 5, 5), (30, 25, 25))
    auto = box_mask(size, spacing, (40, 5, 5), (60, 25, 25))
    result = agreement(manual, auto)
    assert result.dice == 0.0
    assert result.hd_max_mm == pytest.approx(30.0, abs=1e-5)  # outer faces: centres x 10 to 40, and 59 to 29
    assert math.isfinite(result.hd95_mm) and math.isfinite(result.msd_mm)
    assert "do not overlap" in result.note


def test_grids_apart_are_refused():
    manual = box_mask((20, 20, 20), (1.0, 1.0, 1.0), (5, 5, 5), (15, 15, 15))
    auto = box_mask((20, 20, 20), (1.0, 1.0, 1.0), (305, 5, 5), (315, 15, 15), origin_mm=(300.0, 0.0, 0.0))
    with pytest.raises(AgreementError, match="grids do not overlap"):
        agreement(manual, auto)


# --------------------------------------------------------------------------- empty masks, volumes, refusals


def test_empty_masks_give_nan_not_errors():
    size, spacing = (30, 30, 30), (1.0, 1.0, 1.0)
    organ = box_mask(size, spacing, (5, 5, 5), (25, 25, 25))
    empty = box_mask(size, spacing, (0, 0, 0), (0, 0, 0))

    both = agreement(empty, empty)
    assert all(math.isnan(v) for v in (both.dice, both.hd95_mm, both.msd_mm, both.hd_max_mm, both.volume_ratio))
    assert (both.manual_cc, both.auto_cc) == (0.0, 0.0)
    assert both.note == "manual and auto masks both empty"

    no_manual = agreement(empty, organ)
    assert no_manual.dice == 0.0 and math.isnan(no_manual.volume_ratio)
    assert all(math.isnan(v) for v in (no_manual.hd95_mm, no_manual.msd_mm, no_manual.hd_max_mm))
    assert no_manual.auto_cc == pytest.approx(8.0) and no_manual.note == "manual mask empty"

    no_auto = agreement(organ, empty)
    assert no_auto.dice == 0.0 and no_auto.volume_ratio == 0.0 and math.isnan(no_auto.hd95_mm)
    assert no_auto.note == "auto mask empty"


def test_auto_thinner_than_a_manual_voxel_counts_as_empty():
    manual = box_mask((30, 30, 30), (1.0, 1.0, 1.0), (5, 5, 5), (25, 25, 25))
    auto = box_mask((120, 120, 120), (0.25, 0.25, 0.25), (5, 5, 10.25), (25, 25, 10.5))  # one 0.25 mm slab
    result = agreement(manual, auto)
    assert result.dice == 0.0 and math.isnan(result.hd95_mm)
    assert result.auto_cc == pytest.approx(0.1)  # 20 x 20 x 0.25 mm
    assert result.note == f"{RESAMPLED_NOTE}; auto mask empty on the manual grid (thinner than a voxel)"


def test_volume_ratio():
    size, spacing = (50, 50, 50), (1.0, 1.0, 2.0)
    manual = box_mask(size, spacing, (5, 5, 10), (45, 45, 50))
    auto = box_mask(size, spacing, (5, 5, 10), (45, 45, 30))
    result = agreement(manual, auto)
    assert result.manual_cc == pytest.approx(64.0) and result.auto_cc == pytest.approx(32.0)
    assert result.volume_ratio == pytest.approx(0.5)
    assert result.dice == pytest.approx(2 * 32 / 96)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda m: sitk.Cast(m, sitk.sitkFloat32), "integer 0/1 mask"),
        (lambda m: m * 2, "values from 0 to 2"),
        (lambda m: m[:, :, 5], "3-D"),
    ],
)
def test_non_masks_are_refused(make, message):
    mask = box_mask((20, 20, 20), (1.0, 1.0, 1.0), (5, 5, 5), (15, 15, 15))
    with pytest.raises(AgreementError, match=message):
        agreement(make(mask), mask)
    with pytest.raises(AgreementError, match="auto mask"):
        agreement(mask, make(mask))


def test_label_map_values_are_refused_with_signed_types():
    mask = sitk.Cast(box_mask((20, 20, 20), (1.0, 1.0, 1.0), (5, 5, 5), (15, 15, 15)), sitk.sitkInt16)
    with pytest.raises(AgreementError, match="values from -1"):
        agreement(mask, mask - 1)


def test_box_helper_gives_whole_voxels():  # the analytic cases rest on it
    arr = sitk.GetArrayFromImage(box_mask((64, 56, 56), (1.0, 1.0, 1.0), (8, 8, 8), (48, 48, 48)))
    assert arr.sum() == 40**3
    assert np.argwhere(arr).min(axis=0).tolist() == [8, 8, 8] and np.argwhere(arr).max(axis=0).tolist() == [47, 47, 47]
