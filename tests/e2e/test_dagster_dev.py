"""Headless end to end: `dagster dev` (webserver + daemon) on a temporary DAGSTER_HOME.

Two synthetic courses are dropped; the daemon's sensor must add both partitions and
their runs must materialize them (through the DVH), as seen over the webserver's GraphQL
API; then declarative automation must build the cohort DVH table.
"""

import shutil
import time

import pytest

from rt_resources.synthetic import write_patient
from tests.e2e.dagster_dev import MATERIALIZATIONS, RUNS, graphql, start_dagster_dev
from tests.helpers import SMALL


@pytest.fixture
def dagster_dev(tmp_path):
    # two step workers: the multiprocess executor, steps forked from the preloaded forkserver
    # (with one worker, as on a 2-core machine by default, runs use the in-process executor)
    with start_dagster_dev(tmp_path, extra_env={"RT_WORKERS": "2"}) as server:
        yield server


@pytest.mark.slow
def test_daemon_materializes_dropped_courses(dagster_dev):
    port, drop, data, log, _ = dagster_dev
    # write elsewhere, then move in: how a PACS export or rsync lands files
    staging = drop.parent / "staging"
    for i in range(2):
        write_patient(staging, i, SMALL)
    for folder in staging.iterdir():
        shutil.move(str(folder), drop / folder.name)
    (drop / "stray.txt").write_text("not dicom")

    deadline = time.time() + 420
    partitions: set[str] = set()
    while time.time() < deadline:
        mats = graphql(port, MATERIALIZATIONS % "dvh")["assetOrError"].get("assetMaterializations", [])
        partitions = {m["partition"] for m in mats}
        if len(partitions) == 2:
            break
        time.sleep(3)
    assert len(partitions) == 2, log.read_text()[-8000:]
    assert {p.name for p in (data / "courses").iterdir()} == partitions
    for key in partitions:
        for name in ("manifest.json", "ct.nii.gz", "dose.nii.gz", "dvh_metrics.parquet", "dvh_curves.parquet"):
            assert (data / "courses" / key / name).exists(), name

    labels = {e["label"] for m in mats for e in m["metadataEntries"]}
    assert {"source_uids", "input_sha256", "tool_versions", "code_version"} <= labels

    while time.time() < deadline:  # the materialization event precedes the run's end
        runs = graphql(port, RUNS)["runsOrError"]["results"]
        course_runs = [r for r in runs if r["jobName"] == "course_job"]
        if all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in course_runs):
            break
        time.sleep(2)
    assert len(course_runs) == 2 and all(r["status"] == "SUCCESS" for r in course_runs)
    # no TotalSegmentator weights here: no segmentation run at all, not one failed run per course
    assert not [r for r in runs if {"key": "rt/gpu", "value": "true"} in r["tags"]]
    for r in course_runs:
        tags = {t["key"]: t["value"] for t in r["tags"]}
        assert tags["rt/launched_by"] == "sensor" and tags["dagster/partition"] in partitions
        assert tags["dagster/sensor_name"] == "dicom_drop_sensor"

    # the cohort job follows; the stray file shows up in the ingest report
    while time.time() < deadline and not (data / "cohort" / "ingest_report.parquet").exists():
        time.sleep(2)
    import pandas as pd

    report = pd.read_parquet(data / "cohort" / "ingest_report.parquet")
    assert list(report["path"]) == ["stray.txt"]

    # declarative automation: the cohort DVH table appears once both course DVHs exist
    cohort_dvh = data / "cohort" / "dvh_metrics.parquet"
    while time.time() < deadline:
        if cohort_dvh.exists() and pd.read_parquet(cohort_dvh)["course_key"].nunique() == 2:
            break
        time.sleep(3)
    assert cohort_dvh.exists(), log.read_text()[-8000:]
    assert set(pd.read_parquet(cohort_dvh)["course_key"]) == partitions
