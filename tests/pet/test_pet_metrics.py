"""SUV metrics of a region against analytic cases: a uniform hot sphere, a single hot voxel, the
image edge, an empty mask, and the 1 cc peak sphere on an anisotropic grid counted by hand."""

import math

import numpy as np
import pytest

from rt_resources.pet.metrics import PEAK_RADIUS_MM, PEAK_SPHERE_CC, peak_sphere_kernel, suv_metrics

SPACING_MM = (2.0, 2.0, 2.0)


def ball(shape: tuple[int, int, int], radius_mm: float, spacing_mm=SPACING_MM) -> np.ndarray:
    """Voxels (z, y, x) whose centres lie within radius_mm of the central voxel's centre."""
    sx, sy, sz = spacing_mm
    z, y, x = (np.arange(n) - n // 2 for n in shape)
    return (z[:, None, None] * sz) ** 2 + (y[None, :, None] * sy) ** 2 + (x[None, None, :] * sx) ** 2 <= radius_mm**2


@pytest.fixture(scope="module")
def hot_sphere():
    """SUV 8 in a sphere of radius 20 mm, background 1, on a 2 mm grid of 41^3 voxels."""
    shape = (41, 41, 41)
    hot = ball(shape, 20.0)
    suv = np.where(hot, 8.0, 1.0)
    return suv, hot, ball(shape, 30.0)


def test_peak_radius_is_that_of_one_cc():
    # (3 / (4 pi))^(1/3) cm = 0.62035 cm
    assert PEAK_RADIUS_MM == pytest.approx(6.2035, abs=1e-4)
    assert 4 / 3 * math.pi * (PEAK_RADIUS_MM / 10) ** 3 == pytest.approx(PEAK_SPHERE_CC)


def test_uniform_sphere_in_larger_roi(hot_sphere):
    suv, hot, roi = hot_sphere
    m = suv_metrics(suv, roi, SPACING_MM)
    voxel_cc = 0.008  # 2 * 2 * 2 mm^3
    assert m["suv_max"] == 8.0
    assert m["suv_peak"] == pytest.approx(8.0, rel=1e-12)  # the 6.2 mm sphere fits in the 20 mm one
    sphere_cc = 4 / 3 * math.pi * 2.0**3  # r = 20 mm = 2 cm: 33.51 cc
    assert m["mtv40_cc"] == pytest.approx(sphere_cc, rel=0.03)
    assert m["mtv40_cc"] == pytest.approx(hot.sum() * voxel_cc, rel=1e-12)
    assert m["tlg40"] == pytest.approx(8.0 * m["mtv40_cc"], rel=1e-12)
    # SUV >= 2.5 selects the same voxels as SUV >= 0.4 * 8 = 3.2 here
    assert m["mtv25_cc"] == m["mtv40_cc"] and m["tlg25"] == pytest.approx(m["tlg40"], rel=1e-12)
    assert m["n_voxels"] == roi.sum() and m["volume_cc"] == pytest.approx(roi.sum() * voxel_cc, rel=1e-12)
    n_hot = hot.sum()
    mean = (8.0 * n_hot + 1.0 * (roi.sum() - n_hot)) / roi.sum()
    assert m["suv_mean"] == pytest.approx(mean, rel=1e-12)
    assert m["suv_std"] == pytest.approx(np.std(suv[roi]), rel=1e-12)


def test_roi_equal_to_the_hot_sphere(hot_sphere):
    suv, hot, _ = hot_sphere
    m = suv_metrics(suv, hot, SPACING_MM)
    assert m["suv_mean"] == 8.0 and m["suv_std"] == 0.0 and m["suv_max"] == 8.0
    assert m["suv_peak"] == pytest.approx(8.0, rel=1e-12)


def test_single_hot_voxel_peak_is_averaged():
    suv = np.zeros((21, 21, 21))
    suv[10, 10, 10] = 123.0
    mask = np.zeros_like(suv, dtype=bool)
    mask[10, 10, 10] = True
    m = suv_metrics(suv, mask, SPACING_MM)
    kernel_voxels = peak_sphere_kernel(SPACING_MM).sum()  # 123 on a 2 mm grid
    assert m["suv_max"] == 123.0
    assert m["suv_peak"] == pytest.approx(123.0 / kernel_voxels, rel=1e-12)
    assert m["suv_peak"] < 0.05 * m["suv_max"]
    assert m["mtv25_cc"] == pytest.approx(0.008) and m["tlg40"] == pytest.approx(123.0 * 0.008)


def test_peak_at_the_image_edge_is_not_biased_by_zeros():
    suv = np.full((10, 12, 14), 5.0)
    mask = np.zeros_like(suv, dtype=bool)
    mask[0, 0, 0] = True  # a corner: most of the sphere lies outside the image
    assert suv_metrics(suv, mask, SPACING_MM)["suv_peak"] == pytest.approx(5.0, rel=1e-12)


def test_peak_uses_only_the_roi_bounding_box_plus_radius():
    """A hot spot outside the ROI but within the sphere radius counts; one beyond it does not."""
    spacing = (2.0, 2.0, 2.0)
    suv = np.zeros((30, 30, 30))
    suv[15, 15, 18] = 100.0  # 6 mm from the ROI voxel: inside the 6.2 mm sphere
    suv[15, 15, 25] = 1000.0  # 20 mm away: outside
    mask = np.zeros_like(suv, dtype=bool)
    mask[15, 15, 15] = True
    kernel_voxels = peak_sphere_kernel(spacing).sum()
    assert suv_metrics(suv, mask, spacing)["suv_peak"] == pytest.approx(100.0 / kernel_voxels, rel=1e-12)


def test_anisotropic_peak_kernel_counted_by_hand():
    # spacing (x, y, z) = (2, 2, 3) mm, r^2 = 6.2035^2 = 38.48 mm^2; per plane z = 3k mm the in-plane
    # (2i, 2j) points need i^2 + j^2 <= (38.48 - 9 k^2) / 4:
    #   k = 0:  <= 9.62: i=0 -> |j|<=3 (7); |i|=1 -> |j|<=2 (2*5); |i|=2 -> |j|<=2 (2*5); |i|=3 -> j=0 (2)  = 29
    #   k = +-1: <= 7.37: i=0 -> |j|<=2 (5); |i|=1 -> |j|<=2 (2*5); |i|=2 -> |j|<=1 (2*3)                 = 21 each
    #   k = +-2: <= 0.62: only i = j = 0                                                                   = 1 each
    #   total 29 + 2*21 + 2*1 = 73 voxels of 12 mm^3 = 0.876 cc
    kernel = peak_sphere_kernel((2.0, 2.0, 3.0))
    assert kernel.shape == (5, 7, 7)  # z: |k| <= 2 (6 mm), y and x: |i| <= 3 (6 mm)
    assert kernel.sum() == 73
    assert [int(kernel[k].sum()) for k in range(5)] == [1, 21, 29, 21, 1]
    # and suv_metrics uses that kernel: one hot voxel of 73 in zeros peaks at 73 / 73 = 1
    suv = np.zeros((15, 20, 20))
    suv[7, 10, 10] = 73.0
    mask = np.zeros_like(suv, dtype=bool)
    mask[7, 10, 10] = True
    assert suv_metrics(suv, mask, (2.0, 2.0, 3.0))["suv_peak"] == pytest.approx(1.0, rel=1e-12)


def test_empty_mask():
    m = suv_metrics(np.ones((5, 5, 5)), np.zeros((5, 5, 5), dtype=bool), SPACING_MM)
    assert m["volume_cc"] == 0.0 and m["n_voxels"] == 0
    others = [k for k in m if k not in ("volume_cc", "n_voxels")]
    assert others and all(math.isnan(m[k]) for k in others)


def test_mtv25_empty_when_nothing_reaches_2_5():
    suv = np.full((5, 5, 5), 2.0)
    m = suv_metrics(suv, np.ones_like(suv, dtype=bool), SPACING_MM)
    assert m["mtv25_cc"] == 0.0 and m["tlg25"] == 0.0
    assert m["mtv40_cc"] == pytest.approx(125 * 0.008)


@pytest.mark.parametrize(
    ("suv_shape", "mask_shape", "spacing"),
    [((4, 4, 4), (4, 4, 5), SPACING_MM), ((4, 4), (4, 4), SPACING_MM), ((4, 4, 4), (4, 4, 4), (2.0, 0.0, 2.0))],
)
def test_bad_arguments(suv_shape, mask_shape, spacing):
    with pytest.raises(ValueError):
        suv_metrics(np.ones(suv_shape), np.ones(mask_shape, dtype=bool), spacing)
