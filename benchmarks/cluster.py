"""Benchmark: what distribution costs. The same synthetic drop through the one-machine default
and through PostgreSQL + two Celery workers, in one invocation on this machine.

1. one machine: `rtpipeline run` with its own SQLite instance and daemon (the default);
2. cluster: PostgreSQL for the instance, Redis as broker, a Celery worker on queue ``cpu`` and one
   on queue ``gpu`` (one simulated device), `rtpipeline run` with ``RT_STEP_EXECUTOR=celery``.

Both segment with a tiny TotalSegmentator model on the CPU (built here; the official weights
cannot be downloaded). Printed per mode: the command's wall time, the steps run, their summed
durations, and the launch overhead per step (run time not spent inside a step: the orchestrating
process, the queue and, for Celery, broker + worker pick-up + a process per step's instance
connection), with the Celery submit -> start latency. On 2 cores no speed-up is expected: two
workers share the same two cores the single machine has.

    .venv/bin/python benchmarks/cluster.py [--patients 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.rerun import PARAMS, rtpipeline  # noqa: E402 (the repository root on sys.path first)


def step_stats(home: Path, env: dict) -> dict:
    """Steps, their summed durations, run time outside steps, and Celery submit -> start latency."""
    from dagster import DagsterEventType

    from rt_assets.headless.instance import open_instance

    saved = {k: os.environ.get(k) for k in ("DAGSTER_PG_URL",)}
    if env.get("DAGSTER_PG_URL"):
        os.environ["DAGSTER_PG_URL"] = env["DAGSTER_PG_URL"]
    try:
        instance = open_instance(home)
        n_steps, inside, outside, latency = 0, 0.0, 0.0, []
        for run in instance.get_runs():
            logs = instance.all_logs(run.run_id)
            starts, submitted, run_in_steps = {}, {}, 0.0
            run_start = next(
                (
                    e.timestamp
                    for e in logs
                    if e.dagster_event and e.dagster_event.event_type == DagsterEventType.RUN_START
                ),
                None,
            )
            run_end = next(
                (
                    e.timestamp
                    for e in reversed(logs)
                    if e.dagster_event
                    and e.dagster_event.event_type in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE)
                ),
                None,
            )
            for e in logs:
                kind = e.dagster_event.event_type if e.dagster_event else None
                if kind == DagsterEventType.ENGINE_EVENT and (e.message or "").startswith("Submitting celery task"):
                    submitted[e.step_key] = e.timestamp
                elif kind == DagsterEventType.STEP_START:
                    starts[e.step_key] = e.timestamp
                    if e.step_key in submitted:
                        latency.append(e.timestamp - submitted[e.step_key])
                elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE) and e.step_key in starts:
                    run_in_steps += e.timestamp - starts[e.step_key]
                    n_steps += 1
            inside += run_in_steps
            if run_start and run_end:
                outside += max(0.0, (run_end - run_start) - run_in_steps)
        return {
            "steps": n_steps,
            "in_steps_s": inside,
            "outside_per_step_s": outside / max(1, n_steps),
            "celery_latency_s": statistics.median(latency) if latency else None,
        }
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def main() -> None:
    from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
    from tests.cluster.services import postgres, redis, workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3, help="patients (2 courses each; at least 3 = 6 courses)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rt-cluster-"))
    work.mkdir(parents=True, exist_ok=True)
    ts_home = work / "totalseg_home"
    build_tiny_totalseg_model(ts_home, "total_fast")
    env = {
        **os.environ,
        "RT_SITE_SECRET": "benchmark-secret",
        "RT_RADIOMICS_PARAMS": str(PARAMS),
        "TOTALSEG_HOME_DIR": str(ts_home),
        "RT_TOTALSEG_FAST": "1",
        "RT_TOTALSEG_DEVICE": "cpu",
    }
    env.pop("DAGSTER_HOME", None)
    run_args = ("--totalseg-device", "cpu")
    rows = []
    try:
        drop = work / "drop"
        # the demo's anatomy at 10 mm voxels, as make cluster-test (tests/cluster/test_cluster.py: HALF_RES)
        half = ("--rows", "48", "--slices", "24", "--pixel-mm", "10", "--slice-mm", "10")
        synth = ("synth", "--out", str(drop), "--patients", str(args.patients), "--boost", "--second-course", "--mr")
        rtpipeline(*synth, *half, env=env)

        out = work / "one-machine"
        wall, stdout = rtpipeline("run", "--dicom-root", str(drop), "--outdir", str(out), *run_args, env=env)
        rows.append(("one machine (SQLite, local daemon)", wall, step_stats(out / ".dagster", env)))

        home = work / "cluster-home"
        home.mkdir()
        shutil.copy(ROOT / "deploy" / "celery" / "dagster.yaml", home / "dagster.yaml")
        svc = work / "svc"
        svc.mkdir()
        with postgres(svc) as pg_url, redis(svc) as broker:
            cenv = {
                **env,
                "DAGSTER_HOME": str(home),
                "DAGSTER_PG_URL": pg_url,
                "RT_STEP_EXECUTOR": "celery",
                "RT_CELERY_BROKER": broker,
            }
            specs = [("cpu", "cpu", cenv), ("gpu", "gpu", {**cenv, "RT_GPU_DEVICES": "0", "CUDA_VISIBLE_DEVICES": ""})]
            with workers(specs, svc, ROOT):
                out = work / "cluster"
                wall, stdout = rtpipeline("run", "--dicom-root", str(drop), "--outdir", str(out), *run_args, env=cenv)
                rows.append(("Postgres + 2 Celery workers", wall, step_stats(home, cenv)))

        base = rows[0][1]
        courses = 2 * args.patients
        print(
            f"\n{os.cpu_count()} CPUs; drop of {args.patients} patients ({courses} courses); radiomics {PARAMS.name}\n"
        )
        head = ("mode", "wall s", "ratio", "steps", "in steps s", "outside/step s", "celery pick-up s")
        print("{:36} {:>8} {:>6} {:>6} {:>10} {:>14} {:>16}".format(*head))
        for label, wall, st in rows:
            lat = f"{st['celery_latency_s']:.2f}" if st["celery_latency_s"] is not None else "-"
            cells = (label, f"{wall:.1f}", f"{wall / base:.2f}", st["steps"], f"{st['in_steps_s']:.1f}")
            print("{:36} {:>8} {:>6} {:>6} {:>10}".format(*cells), f"{st['outside_per_step_s']:14.2f} {lat:>16}")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
