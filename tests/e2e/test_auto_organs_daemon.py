"""Automatic organs reach every table through the daemon's automation path: `dagster dev` with the
stand-in segmentation, one course moved into the drop; the drop sensor starts the course stage,
automation segments it (the real worker, GPU step and lease) and runs the derived stage, and the
cohort sensor rebuilds the cohort tables once no run is in flight. The course and cohort DVH and
radiomics tables then hold every non-empty automatic organ, with and without custom-structure
rules (the daemon twin of tests/headless/test_auto_organs.py)."""

import shutil
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, DagsterRunStatus

from rt_resources.synthetic import write_patient
from tests.e2e.dagster_dev import RUNS, graphql, start_dagster_dev
from tests.headless.test_auto_organs import RULES, TORSO, auto_organs
from tests.helpers import FAST_RADIOMICS

IN_FLIGHT = {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "MANAGED", "CANCELING"}
TABLES = ("dvh_metrics", "radiomics")
STABLE_S = 20.0  #: the state must hold this long: automation may still be about to launch a run


def _totalseg_in_cohort(data: Path) -> bool:
    """Both cohort tables exist and hold automatic organs (of the one course)."""
    for table in TABLES:
        path = data / "cohort" / f"{table}.parquet"
        if not path.exists():
            return False
        frame = pd.read_parquet(path, columns=["source"])
        if not (frame.source == "totalseg").any():
            return False
    return True


def _wait_until_settled(port: int, data: Path, log: Path, timeout: float) -> list[dict]:
    """Wait until the cohort tables hold automatic organs, no run is in flight and both have held
    for STABLE_S; returns the runs."""
    deadline = time.time() + timeout
    since = None
    while time.time() < deadline:
        runs = graphql(port, RUNS)["runsOrError"]["results"]
        settled = bool(runs) and not any(r["status"] in IN_FLIGHT for r in runs) and _totalseg_in_cohort(data)
        if settled:
            since = since or time.time()
            if time.time() - since >= STABLE_S:
                return runs
        else:
            since = None
        time.sleep(2)
    raise AssertionError(
        f"the cohort tables held no automatic organs with no run in flight within {timeout:.0f} s; runs: "
        f"{[(r['jobName'], r['status']) for r in graphql(port, RUNS)['runsOrError']['results']]}\n"
        f"{log.read_text()[-8000:]}"
    )


@pytest.mark.slow
# with rules, a regression test too: automation ran radiomics for custom_structures while the
# organs' masks were being written, and its end counted as handling them, so the cohort radiomics
# table kept no organ (once in 3 runs; tests/sensors/test_automation_conditions.py has it tick by tick)
@pytest.mark.parametrize("rules", [False, True], ids=["no_rules", "custom_rules"])
def test_auto_organs_reach_course_and_cohort_tables_through_the_daemon(tmp_path, monkeypatch, rules):
    env = {
        "RT_TOTALSEG_BACKEND": "standin",
        "RT_TOTALSEG_DEVICE": "cpu",
        "RT_SEG_WORKER_IDLE_S": "20",
        "RT_RADIOMICS_PARAMS": str(FAST_RADIOMICS),
        "RT_WORKERS": "1",
    }
    if rules:
        (tmp_path / "rules.yaml").write_text(RULES)
        env["RT_CUSTOM_STRUCTURES"] = str(tmp_path / "rules.yaml")
    with start_dagster_dev(tmp_path, env) as (port, drop, data, log, home):
        staging = tmp_path / "staging"
        write_patient(staging, 0, TORSO)
        for folder in sorted(staging.iterdir()):
            shutil.move(str(folder), drop / folder.name)
        runs = _wait_until_settled(port, data, log, timeout=600)  # 155-200 s seen on a loaded 2-core machine
        failed = [(r["jobName"], r["runId"]) for r in runs if r["status"] != "SUCCESS"]
        assert not failed, f"{failed}\n{log.read_text()[-8000:]}"
        assert {"course_job", "cohort_job"} <= {r["jobName"] for r in runs}  # the rest: automation's runs

        (course_dir,) = (data / "courses").iterdir()
        key = course_dir.name
        organs = auto_organs(course_dir)
        assert len(organs) >= 60  # the stand-in's organs inside this short scan
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with DagsterInstance.get() as instance:
            assert all(r.status == DagsterRunStatus.SUCCESS for r in instance.get_runs())
            records = instance.fetch_materializations(AssetKey("radiomics"), limit=20).records
            radiomics = next(r.asset_materialization for r in records if r.asset_materialization.partition == key)
            segmented = instance.fetch_materializations(AssetKey("totalseg_inference"), limit=1).records[0]
        # at these 6 x 6 x 8 mm voxels the smallest vessels have under radiomics' 10 voxels: skipped, saying so
        too_small = {s["roi_name"] for s in radiomics.metadata["skipped"].value if "min_voxels" in s["reason"]}
        assert len(too_small) <= 6
        assert segmented.asset_materialization.metadata["backend"].value == "standin"

        for table in TABLES:
            course = pd.read_parquet(course_dir / f"{table}.parquet")
            cohort = pd.read_parquet(data / "cohort" / f"{table}.parquet")
            assert set(cohort.course_key) == {key}
            expected = organs - too_small if table == "radiomics" else organs
            for frame in (course, cohort):
                assert set(frame.loc[frame.source == "totalseg", "roi_name"]) == expected, table
                assert (frame.source == "manual").any(), table
                if rules:
                    assert {"PTV_minus_heart", "lungs"} <= set(frame.loc[frame.source == "custom", "roi_name"])
                else:
                    assert not (frame.source == "custom").any(), table
