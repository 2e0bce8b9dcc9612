"""The whole Definitions loads, and its shape is what the architecture says."""

from pathlib import Path

from dagster import AssetKey, DynamicPartitionsDefinition

from rt_assets.constants import COHORT_GROUP, COURSE_GROUP
from rt_assets.definitions import defs


def test_asset_graph_snapshot():
    graph = defs.resolve_asset_graph()
    specs = {key.to_user_string(): graph.get(key) for key in graph.get_all_asset_keys()}
    course_assets = {
        "course_manifest",
        "ct_image",
        "dose_grid",
        "structure_masks",
        "dvh",
        "totalseg_input",
        "totalseg_inference",
        "totalseg_masks",
        "totalseg_rtstruct",
        "ct_crop",
        "custom_structures",
        "radiomics",
        "radiomics_robustness",
        "mr_images",
        "course_preview",
        "dvh_eqd2",
        "contour_agreement",
        "pet_images",
        "pet_metrics",
    }
    cohort_assets = {
        "cohort_courses",
        "ingest_report",
        "cohort_dvh_metrics",
        "cohort_radiomics",
        "cohort_radiomics_robustness",
        "cohort_qc",
        "cohort_audit",
        "cohort_agreement",
        "cohort_unmapped_rois",
        "cohort_pet_metrics",
    }
    assert set(specs) == course_assets | cohort_assets
    groups = {
        "totalseg_inference": "segmentation",  # the GPU step alone in the GPU-tagged runs
        "totalseg_masks": "derived",
        "totalseg_rtstruct": "derived",
        "ct_crop": "derived",
        "custom_structures": "derived",
    }
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
    assert parents["totalseg_input"] == {"ct_image"}
    assert parents["totalseg_inference"] == {"totalseg_input"}
    assert parents["totalseg_masks"] == {"ct_image", "totalseg_inference"}
    assert parents["totalseg_rtstruct"] == {"totalseg_masks"}
    # the GPU slot holds inference only: preparing, resampling back and the RTSTRUCT are CPU steps
    assert {name for name, node in specs.items() if node.pools} == {"totalseg_inference"}
    assert specs["totalseg_inference"].pools == {"gpu"}
    assert parents["cohort_courses"] == {"course_manifest"}
    assert parents["cohort_dvh_metrics"] == {"dvh", "dvh_eqd2"}
    assert parents["dvh_eqd2"] == parents["dvh"]  # the same inputs, the phases of dose_grid
    assert parents["contour_agreement"] == {"structure_masks", "totalseg_masks", "custom_structures", "dvh"}
    assert parents["cohort_agreement"] == {"contour_agreement"}
    assert parents["cohort_unmapped_rois"] == {"radiomics", "dvh"}
    assert parents["course_preview"] == {
        "ct_image",
        "structure_masks",
        "dose_grid",
        "totalseg_masks",
        "custom_structures",
    }
    assert parents["mr_images"] == {"course_manifest", "structure_masks"}
    assert parents["radiomics"] == {
        "ct_image",
        "structure_masks",
        "mr_images",
        "pet_metrics",
        "totalseg_masks",
        "custom_structures",
    }
    assert parents["pet_images"] == {"course_manifest", "ct_image", "structure_masks"}
    # SUV metrics (and the masks on the PET grid PET radiomics reads) again when auto organs arrive
    assert parents["pet_metrics"] == {"pet_images", "structure_masks", "totalseg_masks", "custom_structures"}
    assert parents["cohort_pet_metrics"] == {"pet_metrics"}
    assert parents["cohort_radiomics"] == {"radiomics"}
    assert parents["radiomics_robustness"] == {"ct_image", "structure_masks"}
    assert parents["cohort_radiomics_robustness"] == {"radiomics_robustness"}
    assert specs["radiomics"].pools == set()  # pyradiomics on the CPU: no GPU slot
    # cohort tables follow the courses through cohort_sensor (by storage id, once no run is in flight)
    assert defs.resolve_sensor_def("cohort_sensor")
    from rt_assets.cohort_inputs import COHORT_INPUTS, COURSE_ASSETS

    assert set(COHORT_INPUTS) == cohort_assets
    assert set(COURSE_ASSETS) == course_assets


def test_jobs_sensor_executor():
    assert defs.resolve_job_def("cohort_job")
    sensor = defs.resolve_sensor_def("dicom_drop_sensor")
    assert {j.name for j in sensor.jobs} == {"course_job"}
    assert defs.resolve_sensor_def("automation_sensor")
    assert defs.resolve_job_def("segmentation_job").tags["rt/gpu"] == "true"


def fake_weights(home: Path, task: str = "total", fast: bool = True) -> Path:
    """Empty files where TotalSegmentator's checkpoints go: enough for the availability check."""
    from rt_resources.segmentation.nnunet_compat import expected_model_folders

    for folder in expected_model_folders(home, task, fast):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "checkpoint_final.pth").write_bytes(b"")
        for name in ("plans.json", "dataset.json"):
            (folder.parent / name).write_text("{}")
    return home


def test_segmentation_only_where_it_can_run(tmp_path):
    """Without weights: no automation and no segmentation sensor, the reason shown once on the
    asset; with weights: eager automation through the sensor whose runs are tagged rt/gpu."""
    from rt_assets.definitions import build_definitions
    from rt_resources.settings import load_settings

    bare = load_settings(environ={}, overrides={"totalsegmentator": {"home": str(tmp_path / "none"), "fast": True}})
    without = build_definitions(bare)
    for name in ("totalseg_input", "totalseg_inference", "totalseg_masks", "totalseg_rtstruct"):
        node = without.resolve_asset_graph().get(AssetKey(name))
        assert node.automation_condition is None
        assert "not available" in node.metadata["availability"] and "looked for" in node.metadata["availability"]
        assert "Not available on this installation" in node.description
    assert {s.name for s in without.sensors} == {"dicom_drop_sensor", "cohort_sensor", "automation_sensor"}

    ready = load_settings(
        environ={}, overrides={"totalsegmentator": {"home": str(fake_weights(tmp_path / "ts")), "fast": True}}
    )
    with_weights = build_definitions(ready)
    for name in ("totalseg_input", "totalseg_inference", "totalseg_masks", "totalseg_rtstruct"):
        assert with_weights.resolve_asset_graph().get(AssetKey(name)).automation_condition is not None
    seg_sensor = with_weights.resolve_sensor_def("segmentation_automation_sensor")
    assert seg_sensor.run_tags == {"rt/gpu": "true"}  # dagster.yaml limits these runs to one at a time


def test_step_executor_from_settings_and_run_config():
    """(CPU cores - 1) step workers by default; one worker runs in process; a run can set its own."""
    import os

    from rt_assets.executors import executor_config, step_executor
    from rt_resources.settings import load_settings

    default = load_settings(environ={})
    assert default.cpu_workers() == max(1, (os.cpu_count() or 2) - 1)
    assert load_settings(environ={"RT_WORKERS": "5"}).cpu_workers() == 5
    three = load_settings(environ={"RT_WORKERS": "3"})
    config = executor_config(three)
    assert config["multiprocess"]["max_concurrent"] == 3
    assert config["multiprocess"]["start_method"] == {"forkserver": {"preload_modules": ["rt_assets.step_preload"]}}
    assert executor_config(three, workers=1) == {"in_process": {}}  # one step at a time: no process per step
    forced = load_settings(environ={"RT_WORKERS": "1", "RT_STEP_EXECUTOR": "multiprocess"})
    assert "multiprocess" in executor_config(forced)
    executor = step_executor(three)
    assert executor.name == "rt_executor" and executor.config_schema.config_type.fields["workers"].default_value == 3
    from rt_assets.definitions import build_definitions

    assert build_definitions(three).resolve_job_def("course_job").executor_def.name == "rt_executor"


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


def test_radiomics_on_the_gpu_takes_a_gpu_slot(monkeypatch):
    """fastrad on a CUDA device: radiomics and radiomics_robustness in the gpu pool, so they never
    run beside a segmentation; auto without a device stays on the CPU, out of the pool."""
    from rt_assets.definitions import build_definitions
    from rt_resources.radiomics import backends
    from rt_resources.settings import load_settings

    settings = load_settings(environ={"RT_RADIOMICS_BACKEND": "auto"})
    monkeypatch.setattr(backends, "cuda_available", lambda: True)
    graph = build_definitions(settings).resolve_asset_graph()
    for name in ("radiomics", "radiomics_robustness"):
        assert graph.get(AssetKey(name)).pools == {"gpu"} and graph.get(AssetKey(name)).group_name == COURSE_GROUP
    assert graph.get(AssetKey("dvh")).pools == set()
    monkeypatch.setattr(backends, "cuda_available", lambda: False)
    assert build_definitions(settings).resolve_asset_graph().get(AssetKey("radiomics")).pools == set()
