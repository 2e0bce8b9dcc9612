"""The whole Definitions loads, and its shape is what the architecture says."""

from dagster import AssetKey, DynamicPartitionsDefinition

from rt_assets.constants import COHORT_GROUP, COURSE_GROUP
from rt_assets.definitions import defs


def test_asset_graph_snapshot():
    graph = defs.resolve_asset_graph()
    specs = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    assert set(specs) == {"course_manifest", "ct_image", "cohort_courses", "ingest_report"}
    for name in ("course_manifest", "ct_image"):
        node = specs[name]
        assert node.group_name == COURSE_GROUP
        assert isinstance(node.partitions_def, DynamicPartitionsDefinition)
        assert node.partitions_def.name == "courses"
        assert node.code_version
    for name in ("cohort_courses", "ingest_report"):
        assert specs[name].group_name == COHORT_GROUP and specs[name].partitions_def is None
    assert AssetKey("course_manifest") in specs["ct_image"].parent_keys
    assert AssetKey("course_manifest") in specs["cohort_courses"].parent_keys


def test_jobs_sensor_executor():
    course_job = defs.resolve_job_def("course_job")
    assert course_job.executor_def.name == "multiprocess"
    assert defs.resolve_job_def("cohort_job")
    sensor = defs.resolve_sensor_def("dicom_drop_sensor")
    assert {j.name for j in sensor.jobs} == {"course_job", "cohort_job"}


def test_default_workers_is_cores_minus_one(monkeypatch):
    import os

    from rt_assets.executors import default_workers

    monkeypatch.delenv("RT_WORKERS", raising=False)
    assert default_workers() == max(1, (os.cpu_count() or 2) - 1)
    monkeypatch.setenv("RT_WORKERS", "5")
    assert default_workers() == 5
