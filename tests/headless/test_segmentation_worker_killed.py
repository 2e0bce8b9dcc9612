"""A segmentation worker killed mid-course (SIGKILL), through `rtpipeline run`: that course's
`totalseg_inference` step fails with a message naming the segmentation worker, the Dagster pool
slot and the device lease are freed, the next course segments with a fresh worker, and the
command exits 1; running the command again completes the failed course (exit 0, both courses
with automatic organs in the cohort DVH table)."""

import fcntl
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, DagsterRunStatus

from rt_resources.segmentation.worker import socket_path
from rt_resources.state import state_dir
from rt_resources.synthetic import write_patient
from tests.headless.helpers import instance_of, run_cli, runs_of, start_cli
from tests.headless.test_auto_organs import TORSO, standin_env

SEG_STEP = "totalseg_inference"


def _inference_started(instance) -> bool:
    """Whether a `totalseg_inference` step has started. With the pool's prefetch slot a second
    course's step may have started too, waiting for the device lease: this does not say which
    course the worker segments."""
    return any(
        e.step_key == SEG_STEP
        for run in runs_of(instance, "segmentation_job")
        for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
    )


def _wait_for_inference(cli: subprocess.Popen, out: Path, pid_file: Path, log: Path, timeout: float) -> int:
    """Wait until the worker has been started for the first inference; returns its pid. The worker
    is started inside the step that holds the device lease, and writes its pid file when it listens."""
    deadline, instance = time.time() + timeout, None
    while time.time() < deadline:
        assert cli.poll() is None, log.read_text()[-5000:]
        if pid_file.exists():  # the instance exists by then: opening it earlier races its creation by the CLI
            instance = instance or instance_of(out)
            if _inference_started(instance):
                return int(pid_file.read_text().strip())
        time.sleep(0.5)
    raise AssertionError(f"no segmentation inference started within {timeout:.0f} s:\n{log.read_text()[-5000:]}")


def _held_lock_files(lock_dir: Path) -> list[str]:
    """The device lease lock files that someone still holds (flock)."""
    held = []
    for path in sorted(lock_dir.glob("*.lock")):
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
            except OSError:
                held.append(path.name)
    return held


def _worker_pid(instance, key: str) -> int:
    """The worker pid of the course's latest `totalseg_inference` materialization."""
    mats = instance.fetch_materializations(AssetKey(SEG_STEP), limit=20).records
    latest = next(r.asset_materialization for r in mats if r.asset_materialization.partition == key)
    return int(latest.metadata["worker_pid"].value)


@pytest.mark.slow
def test_segmentation_worker_killed_mid_course(drop, tmp_path):
    for i in range(2):
        write_patient(drop, i, TORSO)
    out = tmp_path / "out"
    args = (
        "run",
        "--dicom-root",
        str(drop),
        "--outdir",
        str(out),
        "--totalseg-backend",
        "standin",
        "--totalseg-standin-s",
        "15",
        "--totalseg-device",
        "cpu",
        "--workers",
        "2",
    )
    env = standin_env()
    state = state_dir(out)
    pid_file = socket_path(state, "cpu").with_suffix(".pid")
    pid_file.unlink(missing_ok=True)  # a stale one of an earlier session (a short folder under /tmp)

    log = tmp_path / "cli1.log"
    cli = start_cli(*args, log=log, env=env)
    try:
        killed_pid = _wait_for_inference(cli, out, pid_file, log, timeout=1200)
        time.sleep(5)  # well inside the stand-in's 15 s inference of the first course
        os.kill(killed_pid, signal.SIGKILL)
        rc = cli.wait(timeout=1800)
    finally:
        if cli.poll() is None:
            os.killpg(cli.pid, signal.SIGKILL)
            cli.wait()
    stdout = log.read_text()
    assert rc == 1, stdout

    # the killed course failed in its segmentation step, saying why
    lines = stdout.splitlines()
    (row,) = [i for i, line in enumerate(lines) if line.startswith("c-") and " FAILED " in line]
    killed_key, error = lines[row].split()[0], lines[row + 1]
    assert "totalseg_inference" in error and "segmentation worker" in error, error
    assert f"pid {killed_pid}" in error and "closed the connection" in error, error
    assert "1 failed" in stdout, stdout

    # the other course segmented after it, with a fresh worker, in the same command
    (other,) = [p.name for p in (out / "courses").iterdir() if p.name != killed_key]
    assert any(line.startswith(other) and " ok " in line for line in lines), stdout
    assert (out / "courses" / other / "masks" / "totalseg" / "rois.json").exists()
    assert not (out / "courses" / killed_key / "masks" / "totalseg").exists()
    instance = instance_of(out)
    fresh_pid = _worker_pid(instance, other)
    assert fresh_pid != killed_pid

    # the slot of the pool `gpu` and the device lease are free (nothing left claimed or pending)
    info = instance.event_log_storage.get_concurrency_info("gpu")
    assert not info.claimed_slots and not info.pending_steps, info
    assert list((state / "gpu").glob("*.lock")), "no device lease was taken"
    assert not _held_lock_files(state / "gpu")
    failed_seg = [r for r in runs_of(instance, "segmentation_job") if r.tags["dagster/partition"] == killed_key]
    assert [r.status for r in failed_seg] == [DagsterRunStatus.FAILURE]
    assert not [r for r in instance.get_runs() if not r.is_finished]

    # a second run completes the failed course; the other one is unchanged
    again = run_cli(*args, env=env, timeout=1800)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "1 processed, 1 unchanged, 0 failed" in again.stdout, again.stdout
    dvh = pd.read_parquet(out / "cohort" / "dvh_metrics.parquet")
    for key in (killed_key, other):
        assert (out / "courses" / key / "masks" / "totalseg" / "rois.json").exists()
        assert ((dvh.course_key == key) & (dvh.source == "totalseg")).any(), key
    assert _worker_pid(instance_of(out), killed_key) != killed_pid
