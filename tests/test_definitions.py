"""The whole Definitions loads, and its shape is what the architecture says."""

from dagster import DynamicPartitionsDefinition

from rt_assets.constants import COHORT_GROUP, COURSE_GROUP
from rt_assets.definitions import defs


def test_asset_graph_snapshot():
    graph = defs.resolve_asset_graph()
    specs = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    course_assets = {"course_manifest", "ct_image", "dose_grid", "structure_masks", "dvh", "totalseg_masks",
                     "ct_crop", "custom_structures", "radiomics", "mr_images", "course_preview"}  # fmt: skip
    cohort_assets = {"cohort_courses", "ingest_report", "cohort_dvh_metrics", "cohort_radiomics", "cohort_qc",
                     "cohort_audit"}  # fmt: skip
    assert set(specs) == course_assets | cohort_assets
    groups = {"totalseg_masks": "segmentation", "ct_crop": "derived", "custom_structures": "derived"}
    for name in course_assets:
        node = specs[name]
        assert node.group_name == groups.get(name, COURSE_GROUP)
        assert isinstance(node.partitions_def, DynamicPartitionsDefinition)
        assert node.partitions_def.name == "courses"
        assert node.code_version
    for name in cohort_assets:
        assert specs[name].group_name == COHORT_GROUP and specs[name].partitions_def is None
    parents = {name: {k.to_user_string() for k in node.parent_keys} for name, node in specs.items()}
    assert parents["ct_image"] == {"course_manifest"}
    assert parents["dose_grid"] == {"course_manifest"}
    assert parents["structure_masks"] == {"course_manifest", "ct_image"}
    assert parents["dvh"] == {"dose_grid", "structure_masks", "totalseg_masks", "custom_structures"}
    assert parents["totalseg_masks"] == {"ct_image"}
    assert specs["totalseg_masks"].pools == {"gpu"}  # one segmentation step at a time
    assert specs["totalseg_masks"].automation_condition is not None
    assert parents["cohort_courses"] == {"course_manifest"}
    assert parents["cohort_dvh_metrics"] == {"dvh"}
    assert parents["course_preview"] == {"ct_image", "structure_masks", "dose_grid", "totalseg_masks",
                                         "custom_structures"}  # fmt: skip
    assert parents["mr_images"] == {"course_manifest", "structure_masks"}
    assert parents["radiomics"] == {"ct_image", "structure_masks", "mr_images", "totalseg_masks", "custom_structures"}
    assert parents["cohort_radiomics"] == {"radiomics"}
    assert specs["cohort_dvh_metrics"].automation_condition is not None


def test_jobs_sensor_executor():
    assert defs.resolve_job_def("cohort_job")
    sensor = defs.resolve_sensor_def("dicom_drop_sensor")
    assert {j.name for j in sensor.jobs} == {"course_job", "cohort_job"}
    seg_sensor = defs.resolve_sensor_def("segmentation_automation_sensor")
    assert seg_sensor.run_tags == {"rt/gpu": "true"}  # dagster.yaml limits these runs to one at a time
    assert defs.resolve_sensor_def("automation_sensor")
    assert defs.resolve_job_def("segmentation_job").tags["rt/gpu"] == "true"


def test_default_workers_is_cores_minus_one(monkeypatch):
    import os

    from rt_assets.executors import default_workers

    monkeypatch.delenv("RT_WORKERS", raising=False)
    assert default_workers() == max(1, (os.cpu_count() or 2) - 1)
    monkeypatch.setenv("RT_WORKERS", "5")
    assert default_workers() == 5


def test_step_executor_multiprocess_from_a_preloaded_forkserver(monkeypatch):
    from rt_assets.executors import step_executor

    monkeypatch.delenv("RT_STEP_EXECUTOR", raising=False)
    monkeypatch.setenv("RT_WORKERS", "3")
    assert step_executor().name == "multiprocess"
    from rt_assets.definitions import build_definitions

    job = build_definitions().resolve_job_def("course_job")
    assert job.executor_def.name == "multiprocess"
    monkeypatch.setenv("RT_WORKERS", "1")  # one step at a time: no process per step
    assert step_executor().name == "in_process"
    monkeypatch.setenv("RT_STEP_EXECUTOR", "multiprocess")
    assert step_executor().name == "multiprocess"


def test_step_preload_imports_the_code_location(tmp_path):
    import os
    import shutil
    import subprocess
    import sys

    shutil.copy("dagster.yaml", tmp_path / "dagster.yaml")
    modules = "('rt_assets.definitions', 'sqlalchemy')"
    code = f"import sys, rt_assets.step_preload; print([m in sys.modules for m in {modules}])"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip().splitlines()[-1] == "[True, True]"
