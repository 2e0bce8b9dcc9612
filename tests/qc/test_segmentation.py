"""Autoseg completeness: body regions from the vertebrae, and the organs expected there."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rt_resources.qc.segmentation import autoseg_completeness
from tests.qc.helpers import json_roundtrip


def _totalseg(folder: Path, present: list[str], empty: list[str] = ()) -> Path:
    """TotalSegmentator-like masks on a 10 mm grid (1 cc voxels): 8 voxels per present class."""
    folder.mkdir(parents=True)
    for i, name in enumerate([*present, *empty]):
        arr = np.zeros((12, 6, 6), np.uint8)
        if name in present:
            arr[i % 10 : i % 10 + 2, 1:3, 1:3] = 1
        image = sitk.GetImageFromArray(arr)
        image.SetSpacing((10.0, 10.0, 10.0))
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    return folder


def test_autoseg_completeness_passes_with_the_thoracic_organs(tmp_path):
    folder = _totalseg(
        tmp_path / "ts",
        ["vertebrae_T7", "vertebrae_T8", "heart", "lung_lower_lobe_left", "esophagus", "aorta", "liver"],
        empty=["kidney_left"],
    )
    r = autoseg_completeness(folder)
    assert r.passed, r.description
    assert r.metadata["regions"] == ["thoracic"] and r.metadata["vertebrae"] == ["T7", "T8"]
    assert set(r.metadata["present"]) == {"heart", "lungs", "esophagus", "aorta"} and r.metadata["missing"] == {}
    json_roundtrip(r)


def test_autoseg_completeness_warns_for_a_missing_heart(tmp_path):
    folder = _totalseg(tmp_path / "ts", ["vertebrae_T7", "lung_upper_lobe_right", "esophagus", "aorta"])
    r = autoseg_completeness(folder)
    assert not r.passed and r.severity == "WARN"
    assert r.metadata["missing"] == {"heart": "no mask file"}
    assert "heart (no mask file; expected at vertebrae_T7)" in r.description


def test_autoseg_completeness_counts_empty_masks_as_missing(tmp_path):
    folder = _totalseg(
        tmp_path / "ts", ["vertebrae_L2", "vertebrae_L1", "liver", "kidney_right"], empty=["kidney_left", "aorta"]
    )
    r = autoseg_completeness(folder)
    assert not r.passed and r.metadata["regions"] == ["lumbar"]
    assert r.metadata["missing"] == {"kidney_left": "empty mask", "aorta": "empty mask"}


def test_autoseg_completeness_needs_a_vertebra(tmp_path):
    folder = _totalseg(tmp_path / "ts", ["heart", "liver"], empty=["vertebrae_T5"])
    r = autoseg_completeness(folder)
    assert not r.passed and r.severity == "WARN" and "cannot infer body region" in r.description
    r = autoseg_completeness(tmp_path / "nothing")
    assert not r.passed and r.severity == "WARN" and "no TotalSegmentator masks" in r.description
