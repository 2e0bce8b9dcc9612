"""The radiomics asset: pyradiomics' own numbers, on the right voxels, for every mask source."""

import pandas as pd
import pytest
from dagster import AssetKey, materialize

from rt_assets.assets.cohort.cohort_radiomics import cohort_radiomics
from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.dose_grid import dose_grid
from rt_assets.assets.course.dvh import dvh
from rt_assets.assets.course.radiomics import radiomics
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.resources import RadiomicsConfig
from rt_resources.synthetic import write_patient
from rt_resources.synthetic.analytic import write_analytic_course
from tests.conftest import FAST_RADIOMICS, SMALL

COURSE = [course_manifest, ct_image, dose_grid, structure_masks, dvh, radiomics]


def add(instance, drop, data_root):
    keys = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, keys)
    return keys


def test_features_equal_a_direct_pyradiomics_call(drop, data_root, resources, instance):
    from radiomics.featureextractor import RadiomicsFeatureExtractor

    write_patient(drop, 0, SMALL)
    (key,) = add(instance, drop, data_root)
    pooled = {**resources, "radiomics_config": RadiomicsConfig(params=str(FAST_RADIOMICS), workers=2)}
    assert materialize(COURSE, partition_key=key, instance=instance, resources=pooled).success
    course_dir = data_root / "courses" / key
    table = pd.read_parquet(course_dir / "radiomics.parquet")
    assert list(table.columns[:3]) == ["course_key", "roi_name", "source"] and "patient_id" not in table.columns
    assert {"BODY", "PTV", "Lung_L"} <= set(table["roi_name"])
    extractor = RadiomicsFeatureExtractor(str(FAST_RADIOMICS))
    for _, row in table.iterrows():
        mask = course_dir / "masks" / row["source"] / f"{row['roi_name']}.nii.gz"
        direct = extractor.execute(str(course_dir / "ct.nii.gz"), str(mask))
        for name, value in direct.items():
            if not name.startswith("diagnostics_"):
                assert row[name] == pytest.approx(float(value), rel=1e-6, abs=1e-6), (row["roi_name"], name)
    mat = instance.fetch_materializations(AssetKey("radiomics"), limit=1).records[0].asset_materialization
    assert mat.metadata["pyradiomics_version"].value and len(mat.metadata["params_sha256"].value) == 64
    assert mat.metadata["workers"].value == 2 and not mat.metadata["partial"].value

    assert materialize([cohort_radiomics], instance=instance, resources=resources).success
    cohort = pd.read_parquet(data_root / "cohort" / "radiomics.parquet")
    assert set(cohort["course_key"]) == {key} and len(cohort) == len(table)


def test_mesh_volume_matches_the_dvh_volume(tmp_path, data_root, resources, instance):
    drop = tmp_path / "drop"
    write_analytic_course(drop / "analytic", "gradient")
    res = {**resources, "dicom_drop": resources["dicom_drop"].model_copy(update={"path": str(drop)})}
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=res).success
    course_dir = data_root / "courses" / key
    features = pd.read_parquet(course_dir / "radiomics.parquet").set_index("roi_name")
    volumes = pd.read_parquet(course_dir / "dvh_metrics.parquet").set_index("roi_name")["volume_cc"]
    for roi in ("Box", "Cylinder", "Sphere", "EdgeBox", "BODY"):
        mesh_cc = features.loc[roi, "original_shape_MeshVolume"] / 1000.0
        assert mesh_cc == pytest.approx(volumes[roi], rel=0.02), roi
