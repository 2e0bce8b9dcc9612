"""The cluster as a department would run it: PostgreSQL for the instance, Redis as Celery's
broker, two Celery workers (queue ``cpu``; queue ``gpu`` with one simulated device), and
``rtpipeline run`` on the synthetic demo drop (6 courses, MR included; 10 mm voxels, see HALF_RES)
through the daemon it starts (`make cluster-test`).

Checked: every course succeeds; steps ran in both workers, segmentation only in the GPU worker;
no two segmentation steps overlapped. Faults: a GPU worker killed (SIGKILL) in the middle of a
segmentation step fails that step and its run with a message naming the worker, and the next run
completes the course; Redis or Postgres down at start gives one line naming the address.

The services are started here on loopback ports and stopped at the end (tests/cluster/services.py);
`make cluster-test` installs Debian's postgresql and redis-server when they are missing.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType, DagsterRunStatus

from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
from tests.cluster.services import PG_BIN, postgres, redis, start_worker, wait_worker_ready, workers
from tests.headless.helpers import RTPIPELINE, step_intervals
from tests.helpers import noise_radiomics_env

ROOT = Path(__file__).resolve().parents[2]
SEGMENTATION_STEPS = {"totalseg_inference"}
#: the demo drop's anatomy at 10 mm voxels: the tiny model's weights are random, so its 117 masks
#: are noise, and writing them as an RTSTRUCT takes ~140 s per course at the demo's 5 mm
HALF_RES = ["--rows", "48", "--slices", "24", "--pixel-mm", "10", "--slice-mm", "10"]

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.timeout(1800),  # the hang guard, beyond the module's service start-up and courses
    pytest.mark.skipif(
        (not (PG_BIN / "initdb").exists() or not shutil.which("redis-server"))
        and not os.environ.get("RT_REQUIRE_SERVICES"),
        reason="PostgreSQL or Redis not installed (make cluster-test installs them; .ci/run requires them)",
    ),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Postgres + Redis + a cpu and a gpu Celery worker; yields the environment of the CLI."""
    work = tmp_path_factory.mktemp("cluster")
    ts_home = work / "totalseg_home"
    build_tiny_totalseg_model(ts_home, "total_fast")
    home = work / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "deploy" / "celery" / "dagster.yaml", home / "dagster.yaml")
    with postgres(work) as pg_url, redis(work) as broker:
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": pg_url,
            "RT_STEP_EXECUTOR": "celery",
            "RT_CELERY_BROKER": broker,
            "TOTALSEG_HOME_DIR": str(ts_home),
            "RT_TOTALSEG_FAST": "1",
            "RT_TOTALSEG_DEVICE": "cpu",
            "RT_WORKERS": "1",
            **noise_radiomics_env(),
        }
        gpu_env = {**env, "RT_GPU_DEVICES": "0", "CUDA_VISIBLE_DEVICES": ""}  # one simulated device
        specs = [("cpu", "cpu", env), ("gpu", "gpu", gpu_env)]
        with workers(specs, work, ROOT) as procs:
            yield {"work": work, "env": env, "gpu_env": gpu_env, "home": home, "procs": procs}


def _run(cluster, drop: Path, out: Path, timeout: int = 1500, env=None) -> subprocess.CompletedProcess:
    cmd = [*RTPIPELINE, "run", "--dicom-root", str(drop), "--outdir", str(out), "--totalseg-device", "cpu"]
    # no --radiomics-params: the demo's set resamples to 2 mm and computes GLCM and shape, which on
    # the tiny model's 10 mm noise masks takes minutes per organ; the environment's first-order
    # set (noise_radiomics_env) applies to every ROI
    return subprocess.run(cmd, capture_output=True, text=True, env=env or cluster["env"], timeout=timeout)


def _instance(cluster):
    from rt_assets.headless.instance import open_instance

    os.environ["DAGSTER_PG_URL"] = cluster["env"]["DAGSTER_PG_URL"]
    return open_instance(cluster["home"])


def _celery_hosts(instance, run_id: str) -> dict[str, str]:
    """step key -> the Celery worker that ran it (dagster-celery's engine event)."""
    hosts = {}
    for e in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        data = e.dagster_event.engine_event_data
        entries = {m: v.value for m, v in (data.metadata or {}).items()} if data else {}
        if "Celery worker" in entries:
            hosts[e.step_key] = str(entries["Celery worker"])
    return hosts


def test_demo_drop_through_postgres_and_two_celery_workers(cluster):
    drop, out = cluster["work"] / "drop", cluster["work"] / "out"
    synth = subprocess.run(
        [*RTPIPELINE, "synth", "--out", str(drop), "--patients", "3", "--boost", "--second-course", "--mr", *HALF_RES],
        capture_output=True,
        text=True,
        env=cluster["env"],
    )
    assert synth.returncode == 0, synth.stderr
    proc = _run(cluster, drop, out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert "6 processed, 0 unchanged, 0 failed" in proc.stdout + proc.stderr

    instance = _instance(cluster)
    runs = instance.get_runs()
    assert runs and all(r.status == DagsterRunStatus.SUCCESS for r in runs), [(r.job_name, r.status) for r in runs]
    assert {r.job_name for r in runs} >= {"course_job", "segmentation_job", "cohort_job"}
    hosts = {}
    for run in runs:
        for step, host in _celery_hosts(instance, run.run_id).items():
            hosts.setdefault(step, set()).add(host.split("@")[0])
    assert {h for hs in hosts.values() for h in hs} == {"cpu", "gpu"}, hosts
    assert hosts["totalseg_inference"] == {"gpu"} and hosts["ct_image"] == {"cpu"}, hosts
    seg = sorted(
        (s for s in step_intervals(instance, runs) if s["step"] in SEGMENTATION_STEPS), key=lambda s: s["start"]
    )
    assert len(seg) == 6
    for a, b in zip(seg, seg[1:], strict=False):
        assert b["start"] >= a["end"], f"segmentation steps overlapped: {a} {b}"


def test_a_gpu_worker_killed_mid_step_fails_the_step_and_the_next_run_completes(cluster):
    from rt_resources.synthetic import write_patient
    from tests.helpers import SMALL

    drop, out = cluster["work"] / "drop-kill", cluster["work"] / "out-kill"
    write_patient(drop, 7, SMALL)
    instance = _instance(cluster)
    earlier = {r.run_id for r in instance.get_runs()}  # the other tests' runs share this instance
    cmd = [*RTPIPELINE, "run", "--dicom-root", str(drop), "--outdir", str(out), "--totalseg-device", "cpu"]
    log = cluster["work"] / "run-kill.log"
    with open(log, "w") as sink:
        cli = subprocess.Popen(cmd, stdout=sink, stderr=subprocess.STDOUT, env=cluster["env"])
    gpu = cluster["procs"]["gpu"]
    deadline = time.time() + 600
    killed = False
    while time.time() < deadline and not killed:
        for run in instance.get_runs():
            if run.job_name != "segmentation_job" or run.run_id in earlier:
                continue
            started = instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)
            if any(e.step_key == "totalseg_inference" for e in started):
                os.killpg(gpu.pid, signal.SIGKILL)
                killed = True
                break
        time.sleep(0.2)
    assert killed, log.read_text()[-3000:]
    assert cli.wait(timeout=300) == 1, log.read_text()[-3000:]
    text = log.read_text()
    assert "stopped answering" in text and "gpu@" in text, text[-3000:]

    # the GPU worker is back: the next run completes the course
    wlog = cluster["work"] / "worker-gpu-2.log"
    cluster["procs"]["gpu"] = start_worker("gpu", "gpu", cluster["gpu_env"], wlog, ROOT)
    wait_worker_ready(wlog, cluster["procs"]["gpu"])
    again = subprocess.run(cmd, capture_output=True, text=True, env=cluster["env"], timeout=900)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert (out / "courses").is_dir() and any((out / "courses").glob("*/masks/totalseg"))


def test_redis_or_postgres_down_at_start_names_the_address(cluster, tmp_path):
    from tests.cluster.services import free_port

    drop = tmp_path / "drop"
    drop.mkdir()
    port = free_port()  # nothing listens there
    env = {**cluster["env"], "RT_CELERY_BROKER": f"redis://127.0.0.1:{port}/0"}
    start = time.time()
    proc = _run(cluster, drop, tmp_path / "out", timeout=120, env=env)
    assert proc.returncode == 2 and f"127.0.0.1:{port}" in proc.stderr and "broker" in proc.stderr, proc.stderr
    assert time.time() - start < 60

    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(cluster["home"] / "dagster.yaml", home / "dagster.yaml")
    env = {
        **cluster["env"],
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": f"postgresql+psycopg2://rt@127.0.0.1:{port}/x",
    }
    start = time.time()
    proc = _run(cluster, drop, tmp_path / "out2", timeout=120, env=env)
    assert proc.returncode == 2 and f"port {port}" in proc.stderr and "cannot be opened" in proc.stderr, proc.stderr
    assert time.time() - start < 90
