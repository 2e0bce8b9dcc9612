"""Load through the sensor path, as a department runs it: `dagster dev` (webserver, daemon,
sensors, automation) watching a drop into which 20 synthetic courses (some with MR) land in three
batches, with a (tiny) TotalSegmentator model so every course is segmented too.

Every course is materialized once, no course is requested twice for unchanged content, no
"database is locked", never two segmentations at once, and once no run is in flight every cohort
table and the audit ledger cover all 20 courses (cohort_sensor, by storage id, not by time)."""

import os
import shutil
import time

import pandas as pd
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from rt_assets.sensors.cohort_sensor import BUSY
from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
from rt_resources.synthetic import SynthOptions, write_patient
from tests.e2e.dagster_dev import start_dagster_dev
from tests.headless.helpers import inference_intervals
from tests.helpers import SMALL, noise_radiomics_env

N_COURSES = 20
BATCHES = (7, 7, 6)
BATCH_GAP_S = 15


def _instance(home):
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        return DagsterInstance.get()
    finally:
        del os.environ["DAGSTER_HOME"]


def _covered(data) -> dict[str, int]:
    out = {}
    for name in ("dvh_metrics", "radiomics", "qc", "courses"):
        path = data / "cohort" / f"{name}.parquet"
        out[name] = pd.read_parquet(path)["course_key"].nunique() if path.exists() else 0
    audit = data / "cohort" / "audit"
    if audit.is_dir() and any(audit.glob("ledger-*.parquet")):
        ledger = pd.read_parquet(audit)
        ledger = ledger[ledger["course_key"] != ""]  # cohort assets' own events have no course
        out["audit materializations"] = ledger.loc[ledger["event"] == "materialization", "course_key"].nunique()
        out["audit checks"] = ledger.loc[ledger["event"] == "check", "course_key"].nunique()
    return out


@pytest.mark.load
@pytest.mark.timeout(2400)  # the hang guard: 20 courses through the sensor take 7-11 min on 2 cores
def test_twenty_courses_in_three_batches_through_the_sensor(tmp_path):
    ts_home = tmp_path / "totalseg_home"
    build_tiny_totalseg_model(ts_home, "total_fast")
    env = {
        "TOTALSEG_HOME_DIR": str(ts_home),
        "RT_TOTALSEG_DEVICE": "cpu",
        "RT_TOTALSEG_FAST": "1",
        "RT_WORKERS": "1",
        **noise_radiomics_env(),
    }
    staging = tmp_path / "staging"
    for i in range(N_COURSES):
        write_patient(staging, i, SynthOptions(**{**SMALL.__dict__, "mr": i % 4 == 0}))
    folders = sorted(staging.iterdir())
    with start_dagster_dev(tmp_path, env) as (port, drop, data, log, home):
        start = 0
        for n, size in enumerate(BATCHES):
            for folder in folders[start : start + size]:
                shutil.move(str(folder), drop / folder.name)
            (drop / f"batch{n}.txt").write_text("export notes")  # a file no course uses
            start += size
            time.sleep(BATCH_GAP_S)
        instance = _instance(home)
        deadline, quiet_since, covered = time.time() + 1500, None, {}
        while time.time() < deadline:
            busy = instance.get_runs(RunsFilter(statuses=BUSY), limit=5)
            covered = _covered(data)
            done = covered and all(v == N_COURSES for v in covered.values())
            if busy or not done:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.time()
            elif time.time() - quiet_since > 10:  # converged, and stays so
                break
            time.sleep(3)
        runs = list(instance.get_runs())
        seg = inference_intervals(instance)  # the device leases of the inference steps
        dev_log = log.read_text()
    assert covered and all(v == N_COURSES for v in covered.values()), (covered, dev_log[-6000:])

    course_runs = [r for r in runs if r.job_name == "course_job"]
    by_course: dict[str, list] = {}
    for r in course_runs:
        by_course.setdefault(r.tags["dagster/partition"], []).append(r)
    assert len(by_course) == N_COURSES
    assert all(len(rs) == 1 for rs in by_course.values()), {k: len(v) for k, v in by_course.items() if len(v) > 1}
    assert all(r.status == DagsterRunStatus.SUCCESS for r in course_runs)
    assert "database is locked" not in dev_log
    failed = [r for r in runs if r.status == DagsterRunStatus.FAILURE]
    assert not failed, [(r.job_name, r.tags.get("dagster/partition")) for r in failed]
    assert len({s["partition"] for s in seg}) == N_COURSES
    for a, b in zip(seg, seg[1:], strict=False):
        assert b["start"] >= a["end"], f"inferences overlap: {a} and {b}"
    report = pd.read_parquet(data / "cohort" / "ingest_report.parquet")
    assert {f"batch{n}.txt" for n in range(len(BATCHES))} <= set(report["path"])
    print(f"load: {len(runs)} runs ({len(course_runs)} course runs, {len(seg)} segmentations); cohort {covered}")
