"""QC as asset checks: verdicts on the assets, qc.json, cohort_qc, blocking, previews in metadata."""

import base64
import json

import pandas as pd
import pydicom
from dagster import AssetCheckKey, AssetKey, DagsterEventType, materialize

from rt_assets.assets.cohort.cohort_qc import cohort_qc
from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.course_preview import course_preview
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.dose_grid import dose_grid
from rt_assets.assets.course.dvh import dvh
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_assets.qc import CHECKS
from rt_resources.ingest.survey import survey_drop
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

COURSE = [course_manifest, ct_image, dose_grid, structure_masks, dvh, course_preview]


def add(instance, drop, data_root):
    courses = survey_drop(drop, data_root).courses
    instance.add_dynamic_partitions(course_partitions.name, [c.key for c in courses])
    return {c.patient_id: c.key for c in courses}


def latest_check(instance, asset, name):
    return instance.get_latest_asset_check_evaluation_record(AssetCheckKey(AssetKey(asset), name))


def test_checks_previews_and_cohort_qc_on_a_good_course(drop, data_root, resources, instance):
    write_patient(drop, 0, SMALL)
    key = add(instance, drop, data_root)["SYNTH000"]
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    course_dir = data_root / "courses" / key
    for asset in ("ct_image", "dose_grid", "structure_masks", "dvh"):
        for name, _, _ in CHECKS[asset]:
            record = latest_check(instance, asset, name)
            assert record is not None, (asset, name)
            evaluation = record.event.dagster_event.event_specific_data
            assert evaluation.metadata["course_key"].value == key
    for name in ("frame_of_reference", "ct_geometry"):
        assert latest_check(instance, "ct_image", name).event.dagster_event.event_specific_data.passed
    assert latest_check(instance, "dvh", "dvh_sanity").event.dagster_event.event_specific_data.passed

    qc = json.loads((course_dir / "qc.json").read_text())
    assert qc["schema"] == "rtpipeline.qc/1" and qc["course_key"] == key
    names = {(r["asset"], r["name"]) for r in qc["results"]}
    assert names == {(a, n) for a in ("ct_image", "dose_grid", "structure_masks", "dvh") for n, _, _ in CHECKS[a]}

    # previews: PNG files, and the same pictures embedded in the materialization metadata
    for asset, entry, png in (("course_preview", "preview", "ct_montage.png"), ("dvh", "dvh_plot", "dvh.png")):
        assert (course_dir / "preview" / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        mat = instance.fetch_materializations(AssetKey(asset), limit=1).records[0].asset_materialization
        text = mat.metadata[entry].value
        assert text.startswith("![") and "data:image/png;base64," in text
        assert base64.b64decode(text.split("base64,")[1].rstrip(")"))[:4] == b"\x89PNG"

    assert materialize([cohort_qc], instance=instance, resources=resources).success
    table = pd.read_parquet(data_root / "cohort" / "qc.parquet")
    assert list(table.columns) == ["course_key", "asset", "check", "passed", "severity", "description", "metadata"]
    assert len(table) == len(qc["results"]) and set(table["course_key"]) == {key}


def test_blocking_check_stops_the_course_not_the_cohort(drop, data_root, resources, instance):
    """An RTDOSE on another frame of reference: ct_image's blocking check fails, the course's
    downstream steps do not run, the other course is unaffected, and cohort_qc shows why."""
    write_patient(drop, 0, SMALL)
    write_patient(drop, 1, SMALL)
    for path in (drop / "patient_001").rglob("RTDOSE*.dcm"):
        ds = pydicom.dcmread(path)
        ds.FrameOfReferenceUID = pydicom.uid.generate_uid()
        ds.save_as(path)
    keys = add(instance, drop, data_root)
    good = materialize(COURSE, partition_key=keys["SYNTH000"], instance=instance, resources=resources)
    bad = materialize(
        COURSE, partition_key=keys["SYNTH001"], instance=instance, resources=resources, raise_on_error=False
    )
    assert good.success and not bad.success
    started = {e.step_key for e in bad.all_events if e.event_type == DagsterEventType.STEP_START}
    assert "ct_image" in started and not started & {"structure_masks", "dvh", "course_preview"}
    record = latest_check(instance, "ct_image", "frame_of_reference")
    evaluation = record.event.dagster_event.event_specific_data
    assert not evaluation.passed and evaluation.metadata["course_key"].value == keys["SYNTH001"]
    assert "RTDOSE" in evaluation.description

    assert materialize([cohort_qc], instance=instance, resources=resources).success
    table = pd.read_parquet(data_root / "cohort" / "qc.parquet").set_index(["course_key", "check"])
    row = table.loc[(keys["SYNTH001"], "frame_of_reference")]
    assert not row["passed"] and row["severity"] == "ERROR" and "RTDOSE" in row["description"]
    assert table.loc[(keys["SYNTH000"], "frame_of_reference"), "passed"]


def test_a_check_that_errors_is_a_failed_check(drop, data_root, resources, instance, monkeypatch):
    import rt_assets.assets.course.dvh as dvh_module

    def broken(metrics):
        raise RuntimeError("check crashed")

    monkeypatch.setattr(dvh_module, "dvh_sanity", broken)
    write_patient(drop, 0, SMALL)
    key = add(instance, drop, data_root)["SYNTH000"]
    result = materialize(COURSE, partition_key=key, instance=instance, resources=resources, raise_on_error=False)
    assert not result.success  # dvh_sanity is blocking: an error is a failed ERROR check, never a pass
    evaluation = latest_check(instance, "dvh", "dvh_sanity").event.dagster_event.event_specific_data
    assert not evaluation.passed and "RuntimeError: check crashed" in evaluation.description
    qc = json.loads((data_root / "courses" / key / "qc.json").read_text())
    assert qc["status"] == "FAIL"
