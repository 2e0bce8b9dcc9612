"""kill -9 in the middle of a course, then `rtpipeline run` again: it completes every course and
exits 0 with no manual step; no run is left STARTED; the audit ledger is built; nothing half
written is visible."""

import json
import os
import signal
import time

import pandas as pd
import pytest
import SimpleITK as sitk
from dagster import DagsterEventType, DagsterRunStatus

from rt_assets.headless.daemon import STATE_FILE
from rt_resources.synthetic import SynthOptions, write_patient
from tests.headless.helpers import instance_of, run_cli, runs_of, start_cli
from tests.helpers import SMALL

#: a course that takes a few seconds per step, so the kill lands inside one
SLOWER = SynthOptions(**{**SMALL.__dict__, "rows": 64, "slices": 30, "pixel_mm": 6.0})


def _wait_for_step(out, deadline: float) -> str:
    """Wait until a course run has started a step (and no run is between launch and start, so
    the kill lands inside steps); returns the run id."""
    while time.time() < deadline:
        if (out / ".dagster" / "dagster.yaml").exists():
            instance = instance_of(out)
            runs = runs_of(instance, "course_job")
            if not any(r.status == DagsterRunStatus.STARTING for r in runs):
                for run in runs:
                    if run.status == DagsterRunStatus.STARTED and instance.all_logs(
                        run.run_id, of_type=DagsterEventType.STEP_START
                    ):
                        return run.run_id
        time.sleep(0.2)
    raise AssertionError("no course step started")


def _visible_outputs_are_whole(out) -> None:
    """Every file a reader can see under courses/ is complete (temporary names start with a dot)."""
    for path in (out / "courses").rglob("*"):
        if not path.is_file() or any(part.startswith(".") for part in path.relative_to(out).parts):
            continue
        if path.name.endswith(".nii.gz"):
            sitk.ReadImage(str(path))
        elif path.suffix == ".parquet":
            pd.read_parquet(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


def _kill_daemon_session(out) -> None:
    """Kill the CLI's daemon and everything in its session (code server, run workers): a crash of
    the whole machine's processes, which leaves the in-flight run STARTED in the instance."""
    state = json.loads((out / ".dagster" / STATE_FILE).read_text())
    try:
        os.killpg(os.getpgid(state["pid"]), signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.mark.slow
def test_kill_9_mid_step_then_run_again(drop, tmp_path):
    for i in range(3):
        write_patient(drop, i, SLOWER)
    out = tmp_path / "out"
    args = ("run", "--dicom-root", str(drop), "--outdir", str(out))

    # 1. kill -9 of the CLI alone: its run goes on in the background; the next run waits for it
    cli = start_cli(*args, log=tmp_path / "cli1.log")
    _wait_for_step(out, time.time() + 300)
    os.killpg(cli.pid, signal.SIGKILL)
    cli.wait()
    second = run_cli(*args)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "0 failed" in second.stdout

    # 2. kill -9 of everything (CLI, daemon, code server, the run's worker) mid-step
    cli = start_cli(*args, "--force", log=tmp_path / "cli2.log")
    victim = _wait_for_step(out, time.time() + 300)
    os.killpg(cli.pid, signal.SIGKILL)
    _kill_daemon_session(out)
    cli.wait()
    instance = instance_of(out)
    assert instance.get_run_by_id(victim).status == DagsterRunStatus.STARTED  # orphaned, as a crash leaves it
    _visible_outputs_are_whole(out)

    third = run_cli(*args)
    assert third.returncode == 0, third.stdout + third.stderr
    assert "recovered from an earlier crash" in third.stderr and victim[:8] in third.stderr
    assert "0 failed" in third.stdout and "3 unchanged" not in third.stdout
    orphan = instance.get_run_by_id(victim)
    assert orphan.status == DagsterRunStatus.FAILURE
    assert not [r for r in runs_of(instance) if not r.is_finished]  # nothing left STARTED or QUEUED
    courses = {p.name for p in (out / "courses").iterdir()}
    assert set(pd.read_parquet(out / "cohort" / "dvh_metrics.parquet")["course_key"]) == courses
    ledger = pd.read_parquet(out / "cohort" / "audit")
    assert set(ledger.loc[ledger["event"] == "materialization", "course_key"]) >= courses
    killed = ledger[(ledger["run_id"] == victim) & (ledger["event"] == "check")]
    assert killed["passed"].notna().all() or killed["description"].str.startswith("not evaluated").any()
    _visible_outputs_are_whole(out)
