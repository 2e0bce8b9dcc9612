"""Synthetic CT-like image and ROI masks for the radiomics tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

FAST_PARAMS = """\
imageType:
  Original: {}
featureClass:
  firstorder:
  shape:
setting:
  label: 1
  binWidth: 25
"""

SHAPE = (20, 40, 40)  # z, y, x
SPACING = (2.0, 2.0, 2.0)


def _write(arr: np.ndarray, path: Path) -> None:
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing(SPACING)
    img.SetOrigin((-40.0, -40.0, -20.0))
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> dict[str, Path]:
    """CT image with a body, two spheres and a box (masks in masks/manual), a couch and a 3-voxel mask."""
    root = tmp_path_factory.mktemp("radiomics")
    rng = np.random.default_rng(7)
    z, y, x = np.indices(SHAPE)
    ct = np.full(SHAPE, -1000.0)
    body = (y - 20) ** 2 + (x - 20) ** 2 < 17**2
    ct[body] = 0.0
    sphere_a = (z - 10) ** 2 + (y - 14) ** 2 + (x - 14) ** 2 <= 4**2
    sphere_b = (z - 10) ** 2 + (y - 26) ** 2 + (x - 26) ** 2 <= 3**2
    box = (z >= 5) & (z < 15) & (y >= 10) & (y < 16) & (x >= 24) & (x < 30)
    ct[sphere_a] = 60.0
    ct[sphere_b] = -100.0
    ct[box] = 300.0
    ct += rng.normal(0, 20, SHAPE)
    couch = (y >= 38) & (x >= 2) & (x < 38)
    ct[couch] = -300.0
    image = root / "ct.nii.gz"
    _write(ct.astype(np.int16), image)

    manual = root / "masks" / "manual"
    manual.mkdir(parents=True)
    masks = {"ROI_A": sphere_a, "ROI_B": sphere_b, "box": box, "Couch_Top": couch}
    for name, m in masks.items():
        _write(m.astype(np.uint8), manual / f"{name}.nii.gz")
    tiny = np.zeros(SHAPE, np.uint8)
    tiny[10, 20, 20:23] = 1
    _write(tiny, manual / "tiny.nii.gz")
    # rois.json renames one file; the others keep their file name as ROI name
    (manual / "rois.json").write_text(json.dumps([{"roi_name": "Box GTV", "file": "box.nii.gz"}]))

    params = root / "fast.yaml"
    params.write_text(FAST_PARAMS)
    return {"root": root, "image": image, "masks": root / "masks", "params": params}
