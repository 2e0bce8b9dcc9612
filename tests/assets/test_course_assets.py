"""Materialize course partitions with a real Dagster instance and real files."""

import json

import pydicom
import pytest
import SimpleITK as sitk
from dagster import AssetKey, materialize

from rt_assets.assets.cohort.cohort_courses import cohort_courses
from rt_assets.assets.cohort.ingest_report import ingest_report
from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL, tree_digest

COURSE_ASSETS = [course_manifest, ct_image]


def add_courses(instance, drop, data_root):
    survey = survey_drop(drop, data_root)
    keys = [c.key for c in survey.courses]
    instance.add_dynamic_partitions(course_partitions.name, keys)
    return survey, keys


def test_materialize_each_partition(two_courses, drop, data_root, resources, instance):
    before = tree_digest(drop)
    survey, keys = add_courses(instance, drop, data_root)
    assert len(keys) == 2
    for key in keys:
        result = materialize(COURSE_ASSETS, partition_key=key, instance=instance, resources=resources)
        assert result.success
        course_dir = data_root / "courses" / key
        manifest = json.loads((course_dir / "manifest.json").read_text())
        course = survey.links.course(key)
        assert manifest["course_key"] == key
        assert manifest["ct_series_uid"] == course.ct_series_uid
        assert len(manifest["rtplan_uids"]) == 2 and len(manifest["rtdose_uids"]) == 2
        assert {f["path"] for f in manifest["files"]} == {f.path for f in course.files}
        for f in manifest["files"]:
            assert len(f["sha256"]) == 64
        ct = sitk.ReadImage(str(course_dir / "ct.nii.gz"))
        assert ct.GetSize() == (SMALL.rows, SMALL.rows, SMALL.slices)
    assert tree_digest(drop) == before  # the drop folder is never modified


def test_lineage_metadata_on_every_materialization(two_courses, drop, data_root, resources, instance):
    _, keys = add_courses(instance, drop, data_root)
    materialize(COURSE_ASSETS, partition_key=keys[0], instance=instance, resources=resources)
    for asset, version in (("course_manifest", "3"), ("ct_image", "2")):
        (record,) = instance.fetch_materializations(AssetKey(asset), limit=10).records
        mat = record.asset_materialization
        assert mat.partition == keys[0]
        md = mat.metadata
        for entry in ("source_uids", "input_sha256", "tool_versions", "code_version"):
            assert entry in md, (asset, entry)
        assert md["code_version"].value == version
        assert md["tool_versions"].value["pydicom"] == pydicom.__version__
        assert md["source_uids"].value["ct_series_uid"]
        assert mat.tags.get("dagster/code_version") == version
        # privacy: no patient identifiers in Dagster metadata
        text = json.dumps({k: str(v.value) for k, v in md.items()})
        assert "SYNTH000" not in text and "Synthetic^Patient" not in text


def test_cohort_tables(two_courses, drop, data_root, resources, instance):
    (drop / "readme.txt").write_text("export notes")
    _, keys = add_courses(instance, drop, data_root)
    result = materialize([cohort_courses, ingest_report], instance=instance, resources=resources)
    assert result.success
    import pandas as pd

    courses = pd.read_parquet(data_root / "cohort" / "courses.parquet")
    assert sorted(courses["course_key"]) == sorted(keys)
    assert set(courses["patient_id"]) == {"SYNTH000", "SYNTH001"}
    report = pd.read_parquet(data_root / "cohort" / "ingest_report.parquet")
    assert list(report["path"]) == ["readme.txt"] and report["file_id"][0].startswith("f-")
    assert "not a DICOM file" in report["reason"][0]
    assert courses_mode(data_root) == 0o600  # the key map: readable by its owner only


def courses_mode(data_root) -> int:
    import stat

    return stat.S_IMODE((data_root / "cohort" / "courses.parquet").stat().st_mode)


def test_bad_ct_fails_its_course_with_a_clear_message(drop, data_root, resources, instance):
    write_patient(drop, 0, SMALL)
    sorted(drop.rglob("CT_0006.dcm"))[0].unlink()
    _, (key,) = add_courses(instance, drop, data_root)
    result = materialize(COURSE_ASSETS, partition_key=key, instance=instance, resources=resources, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    # in Dagster the files are named by file id (their folders may carry the patient's name) ...
    from rt_resources.ingest.course_keys import load_site_secret
    from rt_resources.privacy import file_id

    secret = load_site_secret(data_root)
    names = {p.name: p.relative_to(drop).as_posix() for p in drop.rglob("CT_000*.dcm")}
    assert "missing slice" in message
    assert file_id(secret, names["CT_0005.dcm"]) in message and file_id(secret, names["CT_0007.dcm"]) in message
    assert "CT_0005.dcm" not in message and str(drop) not in message
    # ... and the course's files are in the ingest report with the reason and the stage that refused them
    result = materialize([ingest_report], instance=instance, resources=resources)
    import pandas as pd

    report = pd.read_parquet(data_root / "cohort" / "ingest_report.parquet")
    refused = report[report["course_key"] == key]
    assert set(refused["stage"]) == {"ct_image"} and "missing slice" in refused["reason"].iloc[0]
    assert names["CT_0005.dcm"] in set(refused["path"])


@pytest.mark.parametrize("pid", ["../../../tmp/x", "/etc/passwd"])
def test_tag_values_never_steer_output_paths(drop, data_root, resources, instance, tmp_path, pid):
    write_patient(drop, 0, SMALL, patient_id=pid)
    _, (key,) = add_courses(instance, drop, data_root)
    assert materialize(COURSE_ASSETS, partition_key=key, instance=instance, resources=resources).success
    written = {p.relative_to(data_root).as_posix() for p in data_root.rglob("*") if p.is_file()}
    assert f"courses/{key}/ct.nii.gz" in written
    assert all(p.startswith(("courses/c-", "index/")) for p in written), written
    assert not (tmp_path.parent / "x").exists()
