"""MR series linked by a REG: volumes with the manual masks mapped onto them, and MR radiomics."""

import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from dagster import AssetCheckKey, AssetKey, materialize

from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.mr_images import mr_images
from rt_assets.assets.course.radiomics import radiomics
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.radiomics.engine import PARAMS_DIR
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

COURSE = [course_manifest, ct_image, structure_masks, mr_images, radiomics]


def add(instance, drop, data_root):
    keys = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, keys)
    return keys


def test_mr_volume_masks_and_mr_radiomics(drop, data_root, resources, instance):
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    synth = write_patient(drop, 0, dataclasses.replace(SMALL, mr=True)).courses[0]
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    course_dir = data_root / "courses" / key
    mr_dir = course_dir / "mr" / "mr1"
    info = json.loads((mr_dir / "info.json").read_text())
    assert info["series_uid"] == synth.mr_series_uid and info["registration"] == f"REG {synth.reg_uid}"
    np.testing.assert_allclose(np.array(info["ct_to_mr"]), np.array(synth.mr_from_ct).reshape(4, 4), atol=1e-6)
    mr = sitk.ReadImage(str(mr_dir / "image.nii.gz"))
    ct = sitk.ReadImage(str(course_dir / "ct.nii.gz"))
    assert mr.GetSpacing() != ct.GetSpacing()  # the MR keeps its own grid
    mapped = json.loads((mr_dir / "masks" / "manual" / "rois.json").read_text())
    assert {"BODY", "PTV", "Lung_L"} <= {m["roi_name"] for m in mapped}
    body = sitk.ReadImage(str(mr_dir / "masks" / "manual" / "BODY.nii.gz"))
    assert body.GetSize() == mr.GetSize() and sitk.GetArrayViewFromImage(body).sum() > 0

    table = pd.read_parquet(course_dir / "radiomics.parquet")
    assert {"manual", "mr1/manual"} <= set(table["source"])
    extractor = RadiomicsFeatureExtractor(str(PARAMS_DIR / "MR.yaml"))
    row = table[(table["source"] == "mr1/manual") & (table["roi_name"] == "PTV")].iloc[0]
    direct = extractor.execute(str(mr_dir / "image.nii.gz"), str(mr_dir / "masks" / "manual" / "PTV.nii.gz"))
    features = {k: float(v) for k, v in direct.items() if not k.startswith("diagnostics_")}
    assert "original_glcm_Contrast" in features  # the MR parameters, not the fast CT test set
    for name, value in features.items():
        assert row[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name
    # CT and MR rows share the table; MR-only columns on CT rows are not NaN features
    nan_check = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(AssetKey("radiomics"), "radiomics_nan"))
    assert nan_check.event.dagster_event.event_specific_data.passed
    mat = instance.fetch_materializations(AssetKey("mr_images"), limit=1).records[0].asset_materialization
    assert mat.metadata["source_uids"].value["mr_series_uids"] == [synth.mr_series_uid]


def test_course_without_mr_skips_mr_images_and_keeps_radiomics(drop, data_root, resources, instance):
    write_patient(drop, 0, SMALL)
    (key,) = add(instance, drop, data_root)
    result = materialize(COURSE, partition_key=key, instance=instance, resources=resources)
    assert result.success
    mat = instance.fetch_materializations(AssetKey("mr_images"), limit=1).records[0].asset_materialization
    assert mat.metadata["n_series"].value == 0
    table = pd.read_parquet(data_root / "courses" / key / "radiomics.parquet")
    assert set(table["source"]) == {"manual"}
