"""`rtpipeline run` on Dagster's run queue, as a user runs it: real processes, a real daemon,
real files. Runs are enqueued and launched by the daemon; a second run on the same drop starts
nothing; a new course runs alone; a changed setting reruns only what it changes."""

import shutil

import pandas as pd
import pytest
from dagster import DagsterEventType, DagsterRunStatus

from rt_resources.synthetic import write_patient
from tests.headless.helpers import event_types, instance_of, run_cli, runs_of
from tests.helpers import FAST_RADIOMICS, SMALL


@pytest.mark.slow
def test_runs_are_queued_launched_by_the_daemon_and_only_what_changed_reruns(drop, tmp_path):
    for i in range(3):
        write_patient(drop, i, SMALL)
    out = tmp_path / "out"

    first = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 processed, 0 unchanged, 0 failed" in first.stdout
    instance = instance_of(out)
    course_runs = runs_of(instance, "course_job")
    assert len(course_runs) == 3
    for run in course_runs:
        assert run.status == DagsterRunStatus.SUCCESS
        kinds = event_types(instance, run.run_id)
        assert {DagsterEventType.RUN_ENQUEUED, DagsterEventType.RUN_STARTING} <= kinds  # queued, then launched
        assert run.tags["rt/launched_by"] == "cli" and run.tags["rt/stage"] == "course"
        assert run.tags["rt/worker_host"]  # set by the run launcher, in the daemon
        assert int(run.tags["dagster/priority"]) <= 0 and run.tags["dagster/partition"] == run.tags["rt/course"]
        assert run.run_config["resources"]["data_root"]["config"]["path"] == str(out)  # settings as run config
    assert not [r for r in runs_of(instance) if not r.is_finished]
    assert pd.read_parquet(out / "cohort" / "dvh_metrics.parquet")["course_key"].nunique() == 3
    ledger = pd.read_parquet(out / "cohort" / "audit")
    assert set(ledger.loc[ledger["event"] == "check", "course_key"]) >= {r.tags["rt/course"] for r in course_runs}
    n_runs = len(runs_of(instance))

    again = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 processed, 3 unchanged, 0 failed" in again.stdout and "(up to date)" in again.stdout
    assert len(runs_of(instance)) == n_runs  # nothing ran, not even the cohort tables

    write_patient(drop, 3, SMALL)  # a new course in a known drop runs alone
    added = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out))
    assert added.returncode == 0, added.stdout + added.stderr
    assert "1 processed, 3 unchanged, 0 failed" in added.stdout
    assert len(runs_of(instance, "course_job")) == 4

    params = tmp_path / "params.yaml"  # other radiomics parameters: radiomics alone reruns
    params.write_text(FAST_RADIOMICS.read_text().replace("binWidth: 25", "binWidth: 50"))
    assert params.read_text() != FAST_RADIOMICS.read_text()
    changed = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), "--radiomics-params", str(params))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "4 processed" in changed.stdout and "radiomics: settings changed" in changed.stdout
    partial = runs_of(instance, "course_job")[:4]
    assert all({k.to_user_string() for k in run.asset_selection} == {"radiomics"} for run in partial)

    key = partial[0].tags["rt/course"]  # --force --course: that course again, in full
    forced = run_cli(
        "run",
        "--dicom-root",
        str(drop),
        "--outdir",
        str(out),
        "--radiomics-params",
        str(params),
        "--force",
        "--course",
        key,
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "1 processed, 0 unchanged" in forced.stdout
    latest = runs_of(instance, "course_job")[0]
    assert latest.tags["rt/course"] == key and latest.asset_selection is None  # the whole job

    shutil.rmtree(drop / next(p.name for p in drop.iterdir()))  # a course gone from the drop: nothing lost
    gone = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), "--radiomics-params", str(params))
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert len(list((out / "courses").iterdir())) == 4
