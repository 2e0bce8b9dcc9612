"""Dose, masks and DVH assets on a real instance; the cohort DVH table follows automatically."""

import dataclasses
import json
import shutil

import pandas as pd
import pytest
import SimpleITK as sitk
from dagster import AssetKey, DagsterEventType, materialize

from rt_assets.assets.cohort.cohort_dvh_metrics import cohort_dvh_metrics
from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.dose_grid import dose_grid
from rt_assets.assets.course.dvh import dvh
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

COURSE = [course_manifest, ct_image, dose_grid, structure_masks, dvh]
CONTRACT = (
    "course_key roi_name source volume_cc mean_gy min_gy max_gy d2_gy d50_gy d95_gy d98_gy d1cc_gy "
    "d0_1cc_gy rx_gy v95pct_rx_pct v100pct_rx_pct"
).split()


def add(instance, drop, data_root):
    keys = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, keys)
    return keys


def test_course_dvh_end_to_end(drop, data_root, resources, instance):
    write_patient(drop, 0, dataclasses.replace(SMALL, boost=True))
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    course_dir = data_root / "courses" / key

    info = json.loads((course_dir / "dose.json").read_text())
    assert info["prescription_gy"] == pytest.approx(70.0) and "2 plans" in info["decision"]
    mat = instance.fetch_materializations(AssetKey("dose_grid"), limit=1).records[0].asset_materialization
    assert "2 plans" in mat.metadata["decision"].value
    dose = sitk.ReadImage(str(course_dir / "dose.nii.gz"))
    assert sitk.GetArrayViewFromImage(dose).max() == pytest.approx(70.0, abs=0.05)

    rois = json.loads((course_dir / "masks" / "manual" / "rois.json").read_text())
    assert {r["roi_name"] for r in rois} >= {"BODY", "PTV", "PTV_boost", "Lung_L", "Lung_R"}
    assert all((course_dir / "masks" / "manual" / r["file"]).exists() for r in rois if r["file"])

    metrics = pd.read_parquet(course_dir / "dvh_metrics.parquet")
    assert set(CONTRACT) <= set(metrics.columns)
    assert {"v1gy_pct", "v60gy_pct"} <= set(metrics.columns)  # whole Gy up to the max dose
    assert (metrics["source"] == "manual").all() and "patient_id" not in metrics.columns  # keyed by course only
    body = metrics.set_index("roi_name").loc["BODY"]
    assert body["max_gy"] == pytest.approx(70.0, abs=0.1)
    curves = pd.read_parquet(course_dir / "dvh_curves.parquet")
    assert {"course_key", "roi_name", "source", "dose_gy", "volume_cc", "volume_pct"} <= set(curves.columns)
    first = curves[curves.roi_name == "PTV"].iloc[0]
    assert first["dose_gy"] == 0 and first["volume_pct"] == pytest.approx(100.0)


def test_masks_of_other_sources_get_dvhs_by_the_same_code(drop, data_root, resources, instance):
    write_patient(drop, 0, SMALL)
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    masks = data_root / "courses" / key / "masks"
    (masks / "totalseg").mkdir()
    shutil.copy(masks / "manual" / "Lung_L.nii.gz", masks / "totalseg" / "lung_left.nii.gz")
    assert materialize([dvh], partition_key=key, instance=instance, resources=resources).success
    m = pd.read_parquet(data_root / "courses" / key / "dvh_metrics.parquet").set_index(["source", "roi_name"])
    auto, manual = m.loc[("totalseg", "lung_left")], m.loc[("manual", "Lung_L")]
    assert auto["method"] == "mask" and manual["method"] == "contour"
    assert auto["mean_gy"] == pytest.approx(manual["mean_gy"], abs=0.1)
    assert auto["volume_cc"] == pytest.approx(manual["volume_cc"], rel=0.1)


def test_course_without_dose_skips_dvh_and_says_why(drop, data_root, resources, instance):
    write_patient(drop, 0, SMALL)
    for f in drop.rglob("RT*_primary.dcm"):
        f.unlink()
    (key,) = add(instance, drop, data_root)
    result = materialize(COURSE, partition_key=key, instance=instance, resources=resources)
    assert result.success
    skipped = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_SKIPPED]
    assert skipped == []
    (mat,) = instance.fetch_materializations(AssetKey("dose_grid"), limit=1).records
    assert mat.asset_materialization.metadata["has_dose"].value is False
    assert "no usable RTDOSE" in mat.asset_materialization.metadata["decision"].value
    (obs,) = instance.fetch_observations(AssetKey("dvh"), limit=1).records
    assert "no usable RTDOSE" in obs.asset_observation.metadata["skipped"].value
    assert not instance.fetch_materializations(AssetKey("dvh"), limit=1).records
    assert (data_root / "courses" / key / "masks" / "manual" / "BODY.nii.gz").exists()
    assert not (data_root / "courses" / key / "dose.nii.gz").exists()


def test_cohort_dvh_follows_course_dvhs(drop, data_root, resources, instance):
    """cohort_sensor: nothing while a run is in flight; a rebuild whenever a course's DVH was
    materialized after the cohort table was built (by storage id, not time); the coverage check
    names a course missing from it."""
    from dagster import DagsterRunStatus, build_sensor_context

    from rt_assets.definitions import defs
    from rt_assets.sensors.cohort_sensor import cohort_sensor, stale_cohort_tables

    write_patient(drop, 0, SMALL)
    write_patient(drop, 1, SMALL)
    keys = add(instance, drop, data_root)

    def tick():
        return cohort_sensor(build_sensor_context(instance=instance, resources=resources, definitions=defs))

    materialize(COURSE, partition_key=keys[0], instance=instance, resources=resources)
    assert "cohort_dvh_metrics" in stale_cohort_tables(instance, None)
    first = tick()
    assert first.run_key.startswith("cohort:")
    result = materialize([cohort_dvh_metrics], instance=instance, resources=resources)
    assert set(pd.read_parquet(data_root / "cohort" / "dvh_metrics.parquet")["course_key"]) == {keys[0]}
    (check,) = result.get_asset_check_evaluations()
    assert check.passed
    assert "cohort_dvh_metrics" not in stale_cohort_tables(instance, None)

    materialize(COURSE, partition_key=keys[1], instance=instance, resources=resources)
    assert "cohort_dvh_metrics" in stale_cohort_tables(instance, None)
    in_flight = instance.create_run_for_job(
        defs.resolve_job_def("course_job"), tags={"dagster/partition": keys[1]}, status=DagsterRunStatus.STARTED
    )
    assert "in flight" in tick().skip_message  # the course runs first
    instance.report_run_failed(in_flight)
    again = tick()
    assert again.run_key != first.run_key  # a new state, a new run
    assert materialize([cohort_dvh_metrics], instance=instance, resources=resources).success
    assert set(pd.read_parquet(data_root / "cohort" / "dvh_metrics.parquet")["course_key"]) == set(keys)
    assert "cohort_dvh_metrics" not in stale_cohort_tables(instance, None)


def test_coverage_check_names_missing_courses():
    from rt_assets.cohort_inputs import coverage_result

    missing = coverage_result("cohort_dvh_metrics", {"c-1", "c-2", "c-3"}, {"c-1"}, {"c-3"})
    assert not missing.passed and "2 of 3 courses missing (1 with a run in flight)" in missing.description
    assert coverage_result("cohort_dvh_metrics", {"c-1"}, {"c-1"}, set()).passed


def test_roi_names_are_sanitized_for_files_and_exact_in_tables(drop, data_root, resources, instance):
    import pydicom

    write_patient(drop, 0, SMALL)
    path = next(drop.rglob("RTSTRUCT.dcm"))
    ds = pydicom.dcmread(path)
    ptv = next(r for r in ds.StructureSetROISequence if r.ROIName == "PTV")
    ptv.ROIName = "../PTV 60/70 (eval)"
    ds.save_as(path, enforce_file_format=True)
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    manual = data_root / "courses" / key / "masks" / "manual"
    record = next(r for r in json.loads((manual / "rois.json").read_text()) if r["roi_name"] == "../PTV 60/70 (eval)")
    assert record["file"] == "PTV_60_70_eval.nii.gz" and (manual / record["file"]).exists()
    course = data_root / "courses" / key
    assert {p.parent for p in data_root.rglob("*.nii.gz")} <= {manual, course, course / "dose_phases"}
    metrics = pd.read_parquet(data_root / "courses" / key / "dvh_metrics.parquet")
    assert "../PTV 60/70 (eval)" in set(metrics["roi_name"])
