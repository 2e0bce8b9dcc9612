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


BASIC_FIRSTORDER = "imageType:\n  Original: {}\nfeatureClass:\n  firstorder:\nsetting:\n  label: 1\n  binWidth: 25\n"


def test_policy_full_set_for_manual_and_listed_organs_basic_for_the_others(
    drop, data_root, resources, instance, tmp_path
):
    """Default policy on a course with manual ROIs and auto-segmented organs (masks/totalseg/):
    the choice per ROI in the metadata, empty columns for basic rows that QC does not count, and
    policy full (a changed settings digest: rtpipeline run recomputes) giving every ROI the full set."""
    import shutil

    from rt_assets.definitions import defs
    from rt_assets.headless.plan import Planner

    write_patient(drop, 0, SMALL)
    (key,) = add(instance, drop, data_root)
    upstream = [course_manifest, ct_image, structure_masks]
    assert materialize(upstream, partition_key=key, instance=instance, resources=resources).success
    masks = data_root / "courses" / key / "masks"
    (masks / "totalseg").mkdir()
    organs = {"heart": "Heart", "lung_upper_lobe_left": "Lung_L", "rib_left_1": "PTV", "vertebrae_T5": "Lung_L"}
    for organ, like in organs.items():
        shutil.copy(masks / "manual" / f"{like}.nii.gz", masks / "totalseg" / f"{organ}.nii.gz")
    basic = tmp_path / "basic.yaml"  # first-order only: its rows are told apart from FAST's (first-order, shape)
    basic.write_text(BASIC_FIRSTORDER)
    config = {"params": str(FAST_RADIOMICS), "basic_params": str(basic), "sequential": True}
    default = {**resources, "radiomics_config": RadiomicsConfig(**config)}
    result = materialize([radiomics], partition_key=key, instance=instance, resources=default)
    assert result.success

    mat = instance.fetch_materializations(AssetKey("radiomics"), limit=1).records[0].asset_materialization
    rois = {(r["source"], r["roi_name"]): r for r in mat.metadata["rois"].value}
    sets = {name: r["param_set"] for (source, name), r in rois.items() if source == "totalseg"}
    assert sets == {"heart": "full", "lung_upper_lobe_left": "full", "rib_left_1": "basic", "vertebrae_T5": "basic"}
    assert {r["param_set"] for (source, _), r in rois.items() if source == "manual"} <= {"full", "light"}
    assert "not in full_rois" in rois[("totalseg", "rib_left_1")]["reason"]
    assert all(r["cpu_s"] > 0 and r["n_voxels"] > 0 and r["volume_cc"] > 0 for r in rois.values())
    cost = mat.metadata["core_seconds"].value
    assert cost["by_param_set"]["basic"]["n_rois"] == 2 and set(cost["by_size"]) == {
        "<10 cc",
        "10-100 cc",
        "100-1000 cc",
        ">=1000 cc",
    }
    assert mat.metadata["policy"].value == "default"

    table = pd.read_parquet(data_root / "courses" / key / "radiomics.parquet").set_index(["source", "roi_name"])
    assert (
        table.loc[("totalseg", "rib_left_1"), "original_shape_MeshVolume"]
        != table.loc[("totalseg", "rib_left_1"), "original_shape_MeshVolume"]
    )  # NaN: not computed for a basic ROI
    assert table.loc[("totalseg", "heart"), "original_shape_MeshVolume"] > 0
    (check,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "radiomics_nan"]
    assert check.passed, check.metadata

    planner = Planner(instance, defs, default)
    assert mat.metadata["settings_sha256"].value == planner.settings_sha256("radiomics")
    full = {**resources, "radiomics_config": RadiomicsConfig(**config, policy="full")}
    assert Planner(instance, defs, full).settings_sha256("radiomics") != planner.settings_sha256("radiomics")
    assert materialize([radiomics], partition_key=key, instance=instance, resources=full).success
    mat = instance.fetch_materializations(AssetKey("radiomics"), limit=1).records[0].asset_materialization
    assert {r["param_set"] for r in mat.metadata["rois"].value if r["source"] == "totalseg"} == {"full"}
    table = pd.read_parquet(data_root / "courses" / key / "radiomics.parquet")
    assert table.loc[table["source"] == "totalseg", "original_shape_MeshVolume"].notna().all()
