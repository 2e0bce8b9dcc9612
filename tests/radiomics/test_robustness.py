"""Feature robustness under perturbations (rt_resources.radiomics.robustness): the perturbations,
ICC(1,1) against Shrout and Fleiss' worked example, and a synthetic ROI set where a noise-sensitive
texture feature has a low ICC and a shape feature a high one."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from rt_resources.radiomics import RadiomicsSettings
from rt_resources.radiomics.robustness import (
    ICC_COLUMNS,
    Perturbation,
    PerturbationSettings,
    dice,
    draw_perturbations,
    estimate_noise_sd,
    feature_icc,
    perturb,
    perturbed_features,
    robustness_table,
)

SPACING = (1.5, 1.5, 2.0)  # x, y, z mm
NOISE_HU = 15.0
#: Shrout and Fleiss (1979), Table 2: 6 targets rated by 4 judges; their Table 4 gives ICC(1,1) = 0.17
SHROUT_FLEISS = [[9, 2, 5, 8], [6, 1, 3, 2], [8, 4, 6, 8], [7, 1, 2, 6], [10, 5, 6, 9], [6, 2, 4, 7]]


def test_icc_1_1_reproduces_shrout_and_fleiss():
    rows = [{"course_key": "c", "roi_name": f"target{i}", "source": "manual", "perturbation": j, "rating": float(v)}
            for i, ratings in enumerate(SHROUT_FLEISS) for j, v in enumerate(ratings)]  # fmt: skip
    icc = feature_icc(pd.DataFrame(rows)).set_index("feature")
    assert list(icc.reset_index().columns) == ICC_COLUMNS
    row = icc.loc["rating"]
    assert round(row.icc, 2) == 0.17 and row.icc == pytest.approx(0.16574, abs=1e-5)
    assert (round(row.ci_low, 2), round(row.ci_high, 2)) == (-0.13, 0.72)  # F-based 95 % CI, unrounded inside
    assert (row.n_subjects, row.n_raters, bool(row.robust)) == (6, 4, False)


def test_icc_is_undefined_for_one_subject_or_a_constant_feature():
    rows = [{"course_key": "c", "roi_name": "one", "source": "manual", "perturbation": j, "a": float(j), "b": 1.0}
            for j in range(4)]  # fmt: skip
    icc = feature_icc(pd.DataFrame(rows)).set_index("feature")
    assert np.isnan(icc.loc["a", "icc"]) and icc.loc["a", "n_subjects"] == 1 and not icc.loc["a", "robust"]
    two = pd.DataFrame(rows + [{**r, "roi_name": "two"} for r in rows])
    icc = feature_icc(two).set_index("feature")
    assert np.isnan(icc.loc["b", "icc"]) and not icc.loc["b", "robust"]  # constant everywhere


@pytest.fixture(scope="module")
def rois(tmp_path_factory) -> tuple[Path, dict[str, Path], Path]:
    """Six spheres of different sizes and mean intensities in soft tissue, with CT-like noise."""
    root = tmp_path_factory.mktemp("robustness")
    shape = (36, 72, 72)
    z, y, x = np.indices(shape)
    image = np.full(shape, 40.0)
    masks = {}
    spheres = [((18, 18, 18), 4, 60), ((18, 18, 54), 5, 20), ((18, 54, 18), 6, 80), ((18, 54, 54), 7, 30),
               ((18, 36, 36), 9, 50), ((10, 36, 12), 3, 70)]  # fmt: skip
    for i, (c, r, hu) in enumerate(spheres):
        inside = ((z - c[0]) * SPACING[2] / SPACING[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2 <= r**2
        image[inside] = hu
        mask = sitk.GetImageFromArray(inside.astype(np.uint8))
        mask.SetSpacing(SPACING)
        masks[f"roi{i}"] = root / f"roi{i}.nii.gz"
        sitk.WriteImage(mask, str(masks[f"roi{i}"]))
    image += np.random.default_rng(3).normal(0, NOISE_HU, shape)
    ct = sitk.GetImageFromArray(image.astype(np.int16))
    ct.SetSpacing(SPACING)
    sitk.WriteImage(ct, str(root / "ct.nii.gz"))
    params = root / "params.yaml"  # a narrow bin width: GLCM contrast sees the noise
    params.write_text("imageType:\n  Original: {}\nfeatureClass:\n  shape:\n  firstorder:\n  glcm:\n"
                      "setting:\n  label: 1\n  binWidth: 5\n")  # fmt: skip
    return root / "ct.nii.gz", masks, params


def test_noise_sensitive_texture_has_low_icc_and_shape_high(rois):
    """The full chain (noise, translation, rotation, volume adaptation, contour randomisation)."""
    image, masks, params = rois
    settings = RadiomicsSettings(params=params, light_params=None)
    icc, summary = robustness_table(image, masks, settings, n_perturbations=5, seed=1, course_key="P1/C1")
    icc = icc.set_index("feature")
    contrast, volume = icc.loc["original_glcm_Contrast"], icc.loc["original_shape_MeshVolume"]
    assert contrast.icc < 0.5 and not contrast.robust
    assert volume.icc > 0.9 and volume.robust and volume.ci_low < volume.icc < volume.ci_high
    assert (volume.n_subjects, volume.n_raters) == (6, 5)
    assert summary["n_rois"] == 6 and summary["failures"] == [] and summary["icc_form"].startswith("ICC(1,1)")
    assert summary["n_robust"] == int(icc["robust"].sum()) and 0 < summary["n_robust"] < len(icc)


def test_noise_alone_moves_texture_not_shape(rois):
    image, masks, params = rois
    settings = RadiomicsSettings(params=params, light_params=None)
    noise_only = PerturbationSettings(translation=False, rotation=False, volume=False, contour=False)
    table, failures = perturbed_features(image, masks, settings, 4, seed=2, perturbation=noise_only, course_key="k")
    assert failures == [] and len(table) == 24
    assert (table["perturbation_dice"] == 1.0).all()
    assert table["perturbation_noise_sd"].between(0.8 * NOISE_HU, 1.2 * NOISE_HU).all()  # estimated from the image
    icc = feature_icc(table).set_index("feature")
    assert icc.loc["original_shape_MeshVolume", "icc"] == pytest.approx(1.0)
    assert icc.loc["original_glcm_Contrast", "icc"] < 0.5


def test_draws_are_seeded_per_roi():
    options = PerturbationSettings()
    a = draw_perturbations(3, 7, "P1/C1/manual/GTV", options)
    assert a == draw_perturbations(3, 7, "P1/C1/manual/GTV", options)
    assert a != draw_perturbations(3, 7, "P1/C1/manual/CTV", options)
    assert a != draw_perturbations(3, 8, "P1/C1/manual/GTV", options)
    assert all(-15 <= p.angle_deg <= 15 and -0.2 <= p.volume_change <= 0.2 for p in a)
    assert all(0 <= f < 1 for p in a for f in p.shift_fraction)
    off = draw_perturbations(2, 7, "x", PerturbationSettings(translation=False, rotation=False, volume=False))
    assert all(p.shift_fraction == (0.0, 0.0, 0.0) and p.angle_deg == 0 and p.volume_change == 0 for p in off)


def test_each_perturbation_does_what_it_says(rois):
    image_path, masks, _ = rois
    image = sitk.ReadImage(str(image_path))
    mask = sitk.Cast(sitk.ReadImage(str(masks["roi4"])) > 0, sitk.sitkUInt8)
    n = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    options = PerturbationSettings()
    nothing = Perturbation(0, 11, False, (0.0, 0.0, 0.0), 0.0, 0.0, False)
    same_image, same_mask = perturb(image, mask, nothing, options, 0.0)
    assert dice(mask, same_mask) == 1.0
    assert np.array_equal(sitk.GetArrayViewFromImage(same_image), sitk.GetArrayViewFromImage(image).astype(np.float32))
    for change in (-0.2, 0.15):
        _, grown = perturb(image, mask, replace(nothing, volume_change=change), options, 0.0)
        assert int(np.count_nonzero(sitk.GetArrayViewFromImage(grown))) == round(n * (1 + change))
    _, moved = perturb(image, mask, replace(nothing, shift_fraction=(0.5, 0.5, 0.5), angle_deg=10.0), options, 0.0)
    assert 0.8 < dice(mask, moved) < 1.0
    _, randomised = perturb(image, mask, replace(nothing, contour=True), options, 0.0)
    assert 0.75 < dice(mask, randomised) < 1.0
    noisy, _ = perturb(image, mask, replace(nothing, noise=True), options, 10.0)
    added = sitk.GetArrayViewFromImage(noisy) - sitk.GetArrayViewFromImage(image)
    assert added.std() == pytest.approx(10.0, rel=0.02)


def test_noise_estimate():
    rng = np.random.default_rng(0)
    z, y, x = np.indices((40, 40, 40))
    smooth = 100.0 * ((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2 < 12**2)  # an edge, mostly flat
    assert estimate_noise_sd(smooth + rng.normal(0, 20, smooth.shape)) == pytest.approx(20, rel=0.05)
    assert estimate_noise_sd(smooth) < 1.0


def test_pool_and_in_process_give_the_same_perturbations(rois):
    """Every draw comes from (seed, ROI, index): the same table whichever process computes it."""
    image, masks, params = rois
    settings = RadiomicsSettings(params=params, light_params=None)
    two = {k: masks[k] for k in ("roi0", "roi5")}
    pooled, failures = perturbed_features(image, two, settings, 2, seed=4, workers=2, sequential=False)
    in_process, _ = perturbed_features(image, two, settings, 2, seed=4)
    assert failures == [] and len(pooled) == 4
    pd.testing.assert_frame_equal(pooled, in_process)
