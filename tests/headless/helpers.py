"""Helpers for the CLI end-to-end tests: run rtpipeline as a user would, read the instance it used."""

from __future__ import annotations

import os
import subprocess
import sys
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
