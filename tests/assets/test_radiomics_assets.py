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
from tests.helpers import FAST_RADIOMICS, SMALL

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


def test_robustness_is_opt_in_and_gives_an_icc_per_feature(drop, data_root, resources, instance):
    from rt_assets.assets.cohort.cohort_radiomics_robustness import cohort_radiomics_robustness
    from rt_assets.assets.course.radiomics_robustness import radiomics_robustness
    from rt_assets.definitions import defs
    from rt_assets.headless.plan import Planner
    from rt_resources.resources import RobustnessConfig

    for i in range(2):
        write_patient(drop, i, SMALL)
    keys = add(instance, drop, data_root)
    assets = [course_manifest, ct_image, structure_masks, radiomics_robustness]
    for key in keys:  # off by default: a skip with its reason, no file
        assert materialize(assets, partition_key=key, instance=instance, resources=resources).success
    assert not (data_root / "courses" / keys[0] / "radiomics_robustness.parquet").exists()
    assert Planner(instance, defs, resources).skipped("radiomics_robustness", keys[0])
    on = {**resources, "robustness_config": RobustnessConfig(perturbations=3)}
    # turned on, the skip no longer holds: rtpipeline run would run the asset
    assert not Planner(instance, defs, on).skipped("radiomics_robustness", keys[0])

    for key in keys:
        assert materialize([radiomics_robustness], partition_key=key, instance=instance, resources=on).success
    course_dir = data_root / "courses" / keys[0]
    icc = pd.read_parquet(course_dir / "radiomics_robustness.parquet")
    assert list(icc.columns) == ["feature", "icc", "ci_low", "ci_high", "n_subjects", "n_raters", "robust"]
    assert (icc["n_raters"] == 3).all() and (icc["n_subjects"] >= 2).all()
    assert "original_shape_MeshVolume" in set(icc["feature"])
    long = pd.read_parquet(course_dir / "radiomics_perturbations.parquet")
    assert {"PTV", "Heart", "Lung_L"} <= set(long["roi_name"]) and set(long["perturbation"]) == {0, 1, 2}
    mat = instance.fetch_materializations(AssetKey("radiomics_robustness"), limit=1).records[0].asset_materialization
    assert mat.metadata["dagster/row_count"].value == len(icc) and mat.metadata["n_perturbations"].value == 3

    assert materialize([cohort_radiomics_robustness], instance=instance, resources=on).success
    cohort = pd.read_parquet(data_root / "cohort" / "radiomics_robustness.parquet")
    per_course = {k: len(pd.read_parquet(data_root / "courses" / k / "radiomics_perturbations.parquet")) for k in keys}
    n_rois = sum(per_course.values()) // 3
    assert cohort.loc[cohort["feature"] == "original_shape_MeshVolume", "n_subjects"].iloc[0] == n_rois
