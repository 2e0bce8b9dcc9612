"""The image cut around each ROI (region.py) and read once per worker gives pyradiomics' features
on the whole image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from radiomics.featureextractor import RadiomicsFeatureExtractor

from rt_resources.radiomics import PARAMS_DIR, RadiomicsSettings, RadiomicsTask, run_tasks, select_tasks
from rt_resources.radiomics.backends import relative_difference
from rt_resources.radiomics.engine import extract_one
from rt_resources.radiomics.region import PARITY_REL, crop_rule, crop_rule_for, crop_to_roi
from tests.helpers import FAST_RADIOMICS

#: resampled to 1 mm with B-spline, LoG and wavelet images: the preprocessing of CT.yaml, fewer classes
RESAMPLED = """\
imageType:
  Original: {}
  LoG:
    sigma: [1.0, 2.0]
  Wavelet: {}
featureClass:
  firstorder:
  shape:
  glcm:
setting:
  label: 1
  resampledPixelSpacing: [1, 1, 1]
  interpolator: sitkBSpline
  binWidth: 25
"""
SHAPE = (40, 110, 120)  # z, y, x: larger than an ROI and its margins, so that the image is cut
SPACING = (0.8, 0.8, 2.5)  # x, y, z (mm)


def _write(array: np.ndarray, path: Path) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin((-48.0, -44.0, -50.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict[str, Path]:
    """A CT with texture everywhere (the B-spline prefilter sees it) and three ROIs: in the middle,
    touching the image's low x and z edges, and one slice thick."""
    root = tmp_path_factory.mktemp("region")
    rng = np.random.default_rng(11)
    z, y, x = np.indices(SHAPE)
    ct = 40 * np.sin(x / 3.0) * np.cos(y / 5.0) + 15 * z + rng.normal(0, 30, SHAPE)
    middle = ((z - 20) * 2.5) ** 2 + ((y - 55) * 0.8) ** 2 + ((x - 60) * 0.8) ** 2 <= 7.0**2
    edge = (z < 4) & (x < 9) & (y >= 40) & (y < 52)
    flat = (z == 30) & (abs(y - 80) < 6) & (abs(x - 90) < 8)
    ct[middle] += 80
    image = _write(ct.astype(np.int16), root / "ct.nii.gz")
    manual = root / "masks" / "manual"
    manual.mkdir(parents=True)
    for name, mask in {"middle": middle, "edge": edge, "flat": flat}.items():
        _write(mask.astype(np.uint8), manual / f"{name}.nii.gz")
    # float64: the B-spline prefilter's round-off is not rounded away into int16 (measured: 8e-15)
    float_image = _write(ct + 0.25, root / "ct_float.nii.gz")
    params = root / "resampled.yaml"
    params.write_text(RESAMPLED)
    return {"image": image, "float_image": float_image, "masks": root / "masks", "params": params}


def _worst(a: dict[str, float], b: dict[str, float]) -> float:
    assert a.keys() == b.keys()
    return max(relative_difference(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("params", "image"), [("resampled", "image"), ("fast", "image"), ("resampled", "float_image")])
def test_cut_image_equals_the_whole_image_and_direct_pyradiomics(course, params, image):
    """The shared-image path (image read once, cut around the ROI) against the per-ROI path
    (pyradiomics on the whole image, and pyradiomics reading the files itself)."""
    params = course["params"] if params == "resampled" else FAST_RADIOMICS
    cut, whole = RadiomicsSettings(params=params), RadiomicsSettings(params=params, crop_to_roi=False)
    tasks, _ = select_tasks(course["masks"], cut)
    assert {t.roi_name for t in tasks} == {"middle", "edge", "flat"}
    extractor = RadiomicsFeatureExtractor(str(params))
    for task in tasks:
        shared = extract_one(course[image], task, cut)
        per_roi = extract_one(course[image], task, whole)
        assert _worst(shared, per_roi) <= PARITY_REL, task.roi_name
        if image == "image":
            raw = extractor.execute(str(course[image]), str(task.mask_path))
            direct = {k: float(v) for k, v in raw.items() if not k.startswith("diagnostics_")}
            assert _worst(shared, direct) <= PARITY_REL, task.roi_name


def test_the_image_is_cut_and_the_mask_keeps_its_origin_when_resampled(course):
    image = sitk.ReadImage(str(course["image"]))
    mask = sitk.ReadImage(str(course["masks"] / "manual" / "middle.nii.gz"))
    rule = crop_rule_for(course["params"])
    assert rule is not None and rule.resampled_mm == (1.0, 1.0, 1.0)
    assert rule.margin_voxels(SPACING) == (29, 29, 27)  # ceil(7 * 1 / 0.8) + 20, ceil(7 * 2.5 / 2.5) + 20
    cut_image, cut_mask = crop_to_roi(image, mask, rule)
    assert np.prod(cut_image.GetSize()) < np.prod(image.GetSize()) / 2
    assert cut_mask.GetOrigin() == mask.GetOrigin()  # pyradiomics anchors its grid there
    unresampled = crop_rule_for(FAST_RADIOMICS)
    assert unresampled is not None and unresampled.resampled_mm is None
    small_image, small_mask = crop_to_roi(image, mask, unresampled)
    assert small_image.GetSize() == small_mask.GetSize() and small_image.GetOrigin() == small_mask.GetOrigin()
    assert int(np.count_nonzero(sitk.GetArrayViewFromImage(small_mask))) == int(
        np.count_nonzero(sitk.GetArrayViewFromImage(mask))
    )


def test_parameters_that_need_the_whole_image_are_not_cut():
    assert crop_rule({"normalize": True, "interpolator": "sitkBSpline", "resampledPixelSpacing": [1, 1, 1]}, []) is None
    assert crop_rule({"interpolator": "sitkBSpline"}, ["Original", "LoG"]) is None  # LoG on the whole image
    assert crop_rule({"interpolator": "sitkBSpline"}, ["Original"]) is not None
    assert crop_rule_for(PARAMS_DIR / "MR.yaml") is None  # normalize: true
    assert crop_rule_for(PARAMS_DIR / "CT.yaml") is not None and crop_rule_for(PARAMS_DIR / "CT_basic.yaml") is not None


def test_the_image_is_read_once_for_every_roi(course, monkeypatch):
    """Sequentially (one process, as one pool worker): the CT once, each mask once."""
    from rt_resources.radiomics import engine

    reads: list[str] = []
    real = sitk.ReadImage
    monkeypatch.setattr(sitk, "ReadImage", lambda path, *a, **k: reads.append(str(path)) or real(path, *a, **k))
    monkeypatch.setattr(engine, "_IMAGE_CACHE", {})
    monkeypatch.setattr(engine, "_NAN_COUNTS", {})
    settings = RadiomicsSettings(params=FAST_RADIOMICS)
    tasks = [RadiomicsTask(p.stem.split(".")[0], "manual", p) for p in sorted((course["masks"] / "manual").iterdir())]
    cpu: dict[int, float] = {}
    results, failures = run_tasks(course["image"], tasks, settings, workers=1, sequential=True, cpu_seconds=cpu)
    assert failures == [] and len(results) == 3
    assert reads.count(str(course["image"])) == 1 and len(reads) == 1 + len(tasks)
    assert sorted(cpu) == [0, 1, 2] and all(s > 0 for s in cpu.values())
