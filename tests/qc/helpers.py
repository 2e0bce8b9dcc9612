"""Helpers of the QC check tests: a course through the course assets, mask folder edits, tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from rt_resources.qc.results import QcResult, from_dict, to_dict
from rt_resources.synthetic import SynthOptions

OPTIONS = SynthOptions(rows=48, slices=24, pixel_mm=8.0, slice_mm=8.0, boost=True)
GOOD_ROIS = ("BODY", "PTV", "PTV_boost", "Lung_L", "Lung_R", "Heart")  # inside the scan, resolved


def materialize_course(drop: Path, data_root: Path, with_dose: bool = True) -> Path:
    """Run the course assets on ``drop`` (one course) and return its course folder."""
    from dagster import instance_for_test, materialize

    from rt_assets.assets.course.course_manifest import course_manifest
    from rt_assets.assets.course.ct_image import ct_image
    from rt_assets.assets.course.dose_grid import dose_grid
    from rt_assets.assets.course.structure_masks import structure_masks
    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop
    from rt_resources.resources import DataRoot, DicomDrop

    assets = [course_manifest, ct_image, structure_masks] + ([dose_grid] if with_dose else [])
    with pytest.MonkeyPatch.context() as mp, instance_for_test() as instance:
        mp.setenv("RT_SITE_SECRET", "test-secret")
        (key,) = [c.key for c in survey_drop(drop, data_root).courses]
        instance.add_dynamic_partitions(course_partitions.name, [key])
        resources = {
            "data_root": DataRoot(path=str(data_root)),
            "dicom_drop": DicomDrop(path=str(drop), quiet_period_s=0),
        }
        assert materialize(assets, partition_key=key, instance=instance, resources=resources).success
    return data_root / "courses" / key


def subset_masks(masks: Path, dest: Path, names) -> Path:
    """A copy of a masks folder with only ``names`` (rois.json filtered)."""
    dest.mkdir(parents=True)
    records = [r for r in json.loads((masks / "rois.json").read_text()) if r["roi_name"] in names]
    for r in records:
        shutil.copy(masks / r["file"], dest / r["file"])
    (dest / "rois.json").write_text(json.dumps(records))
    return dest


def edit_mask(path: Path, edit) -> None:
    """Apply ``edit`` to the (z, y, x) voxels of the mask file at ``path``, in place."""
    image = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(image)
    edit(arr)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), True)


def json_roundtrip(result: QcResult) -> None:
    """Assert that ``result`` survives strict JSON (as in qc.json) unchanged."""
    text = json.dumps(to_dict(result), allow_nan=False)  # strict JSON: no NaN, numpy types
    assert from_dict(json.loads(text)) == result


def dvh_metrics(**override) -> pd.DataFrame:
    """A consistent two-row dvh_metrics table (PTV, Heart); ``override`` edits the PTV row."""
    row = dict(
        course_key="c-0",
        roi_name="PTV",
        source="manual",
        method="contour",
        volume_cc=40.0,
        mean_gy=69.0,
        min_gy=60.0,
        max_gy=71.0,
        d2_gy=70.8,
        d50_gy=69.2,
        d95_gy=66.0,
        d98_gy=64.0,
    )
    other = {
        **row,
        "roi_name": "Heart",
        "volume_cc": 60.0,
        "mean_gy": 10.0,
        "min_gy": 1.0,
        "max_gy": 30.0,
        "d2_gy": 28.0,
        "d50_gy": 8.0,
        "d95_gy": 2.0,
        "d98_gy": 1.5,
    }
    return pd.DataFrame([{**row, **override}, other])


def radiomics_frame(n_features: int = 20) -> pd.DataFrame:
    """A radiomics table of three ROIs with ``n_features`` finite features each."""
    rng = np.random.default_rng(0)
    ids = pd.DataFrame({"course_key": "c-0", "roi_name": ["PTV", "Heart", "Lung_L"], "source": "manual"})
    features = pd.DataFrame(rng.normal(size=(3, n_features)), columns=[f"original_f{i}" for i in range(n_features)])
    return pd.concat([ids, features], axis=1)
