"""Headless end to end: `dagster dev` (webserver + daemon) on a temporary DAGSTER_HOME.

Two synthetic courses are dropped; the daemon's sensor must add both partitions and
their runs must materialize them (through the DVH), as seen over the webserver's GraphQL
API; then declarative automation must build the cohort DVH table.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rt_resources.synthetic import write_patient
from tests.conftest import SMALL

ROOT = Path(__file__).resolve().parents[2]
DAGSTER = Path(sys.executable).parent / "dagster"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        payload = json.loads(resp.read())
    assert "errors" not in payload, payload
    return payload["data"]


MATERIALIZATIONS = """
{ assetOrError(assetKey: {path: ["%s"]}) {
    ... on Asset { assetMaterializations(limit: 20) { partition runId metadataEntries { label } } } } }
"""
RUNS = """
{ runsOrError { ... on Runs { results { runId jobName status tags { key value } } } } }
"""


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    drop, data = tmp_path / "drop", tmp_path / "data"
    drop.mkdir()
    port = _free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "RT_DROP_ROOT": str(drop),
        "RT_DATA_ROOT": str(data),
        "RT_QUIET_PERIOD_S": "3",
        "RT_SENSOR_INTERVAL_S": "2",
    }
    log = open(tmp_path / "dagster_dev.log", "w")
    proc = subprocess.Popen(
        [str(DAGSTER), "dev", "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # dagster dev ignores SIGINT when started from a script unless the default handler is restored
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                graphql(port, "{ version }")
                break
            except Exception:
                if proc.poll() is not None or time.time() > deadline:
                    raise RuntimeError((tmp_path / "dagster_dev.log").read_text()[-5000:]) from None
                time.sleep(1)
        yield port, drop, data, tmp_path / "dagster_dev.log"
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_daemon_materializes_dropped_courses(dagster_dev):
    port, drop, data, log = dagster_dev
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
