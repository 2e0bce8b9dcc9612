"""Start `dagster dev` for end-to-end tests and talk to it over GraphQL."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def start_dagster_dev(tmp_path: Path, extra_env: dict[str, str] | None = None):
    """Run `dagster dev` (webserver + daemon) on a fresh DAGSTER_HOME with the project's
    dagster.yaml; yields (port, drop, data root, log path, DAGSTER_HOME)."""
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
        **(extra_env or {}),
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
        yield port, drop, data, tmp_path / "dagster_dev.log", home
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
