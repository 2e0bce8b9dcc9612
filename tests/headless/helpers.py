"""Helpers for the CLI end-to-end tests: run rtpipeline as a user would, read the instance it used."""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from dagster import DagsterEventType, RunsFilter

RTPIPELINE = [sys.executable, "-m", "rt_assets.cli"]


def cli_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env.pop("DAGSTER_HOME", None)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*RTPIPELINE, *args], capture_output=True, text=True, env=env or cli_env(), timeout=timeout)


def start_cli(*args: str, log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """The CLI in the background, in its own session (so a test can kill it like a user's kill -9)."""
    out = open(log, "w")
    return subprocess.Popen(
        [*RTPIPELINE, *args], stdout=out, stderr=subprocess.STDOUT, env=env or cli_env(), start_new_session=True
    )


def instance_of(out: Path):
    from rt_assets.headless.instance import open_instance

    return open_instance(Path(out) / ".dagster")


def step_intervals(instance, runs=None) -> list[dict]:
    """(run, partition, step, start, end, tags) of every finished step."""
    found = []
    for run in runs if runs is not None else instance.get_runs():
        starts, ends = {}, {}
        kinds = {DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE}
        for e in instance.all_logs(run.run_id, of_type=kinds):
            (starts if e.dagster_event.event_type == DagsterEventType.STEP_START else ends)[e.step_key] = e.timestamp
        for step, start in starts.items():
            if step in ends:
                found.append(
                    {
                        "run": run.run_id,
                        "partition": run.tags.get("dagster/partition"),
                        "step": step,
                        "start": start,
                        "end": ends[step],
                        "tags": run.tags,
                    }
                )
    return found


def runs_of(instance, job_name: str | None = None) -> list:
    return list(instance.get_runs(RunsFilter(job_name=job_name) if job_name else None))


def event_types(instance, run_id: str) -> set[DagsterEventType]:
    return {e.dagster_event.event_type for e in instance.all_logs(run_id) if e.dagster_event is not None}


def inference_intervals(instance, asset: str = "totalseg_inference") -> list[dict]:
    """(partition, start, end, device) of every inference: the device lease each GPU step held
    (its ``device_lease`` metadata), sorted by start. Inference steps may overlap in time (one
    waits at the lease with its input ready); their leases on one device never do."""
    from dagster import AssetKey

    out = []
    for record in instance.fetch_materializations(AssetKey(asset), limit=1000).records:
        lease = record.asset_materialization.metadata["device_lease"].value
        out.append(
            {
                "partition": record.partition_key,
                "start": lease["acquired"],
                "end": lease["released"],
                "device": lease["device"],
            }
        )
    return sorted(out, key=lambda r: r["start"])


class DeviceHold:
    """Every GPU slot of this machine (the lease lock files under a data root's state folder) held
    by the test, as another process using the GPU would hold them: GPU steps wait at the lease
    meanwhile, so a test can make the window in which other courses' CPU stages must run."""

    def __init__(self, state: Path) -> None:
        from rt_resources.gpu_leases import LOCK_FOLDER, GpuConfig

        slots = GpuConfig().slots()
        lock_dir = Path(state) / LOCK_FOLDER
        lock_dir.mkdir(parents=True, exist_ok=True)
        self.files = [slots.lock_file(lock_dir, d, k) for d in slots.devices for k in range(slots.per_device)]
        self.fds: list[int] = []

    def take(self, wait: bool = False) -> None:
        for path in self.files:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            fcntl.flock(fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            self.fds.append(fd)

    def release(self) -> None:
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def take_back_after_one_lease(self, timeout_s: float = 300) -> None:
        """Release, let one GPU step lease the device, and take it back the moment that step lets
        it go (a blocked flock is woken at the unlock, before a polling step's next try)."""
        self.release()
        deadline = time.time() + timeout_s
        while time.time() < deadline:  # wait until a step holds the device
            fd = os.open(self.files[0], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                break
            finally:
                os.close(fd)
            time.sleep(0.02)
        self.take(wait=True)


@contextlib.contextmanager
def held_device(state: Path) -> Iterator[DeviceHold]:
    """Hold every GPU slot of this machine for the block (:class:`DeviceHold`)."""
    hold = DeviceHold(state)
    hold.take()
    try:
        yield hold
    finally:
        hold.release()


def step_started(instance, step: str) -> list[tuple[str, float]]:
    """(partition, time) of every start of ``step`` in the instance."""
    return [
        (run.tags.get("dagster/partition"), e.timestamp)
        for run in instance.get_runs()
        for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
        if e.step_key == step
    ]
