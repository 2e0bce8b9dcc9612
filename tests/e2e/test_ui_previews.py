"""The Dagster UI shows a course's previews and QC: headless Chromium on a real webserver.

A synthetic course goes through `rtpipeline run` (its own Dagster instance); `dagster-webserver`
serves that instance; Chromium opens the course_preview and dvh asset pages of the partition,
opens the markdown metadata and finds the PNG rendered (an <img> with a data: URL and a
non-zero natural width), finds the QC checks on the ct_image asset's Checks tab, and the column
schema (names and descriptions) on the cohort_dvh_metrics asset's page.
"""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from rt_resources.synthetic import write_patient
from tests.e2e.browser import chromium_path, headless_chromium
from tests.e2e.dagster_dev import ROOT, _free_port
from tests.helpers import SMALL

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("RT_REQUIRE_BROWSER"),
    reason="no chromium here (.ci/run installs it and sets RT_REQUIRE_BROWSER=1)",
)

CLICK_SHOW_MARKDOWN = """(() => {
  const skip = [...document.querySelectorAll('button')].find(b => b.textContent.trim() === 'Skip');
  if (skip) skip.click();  // Dagster's first-visit community dialog
  const b = [...document.querySelectorAll('button, a, span, div')]
    .find(e => e.childElementCount === 0 && e.textContent.trim() === '[Show Markdown]');
  if (b) { b.click(); return true; }
  return false;
})()"""
IMAGE_WIDTH = """(() => {
  const i = document.querySelector('img[src^="data:image/png"]');
  return i && i.complete ? i.naturalWidth : 0;
})()"""


def _webserver(home: Path, data: Path, drop: Path, log: Path):
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "RT_DATA_ROOT": str(data), "RT_DROP_ROOT": str(drop)}
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", str(ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        cwd=ROOT,
        env=env,
        stdout=open(log, "w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5):
                return proc, port
        except OSError:
            if proc.poll() is not None:
                break
            time.sleep(1)
    raise RuntimeError(log.read_text()[-4000:])


def test_asset_pages_show_previews_and_checks(tmp_path):
    drop, out = tmp_path / "drop", tmp_path / "out"
    write_patient(drop, 0, SMALL)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    run = subprocess.run(
        [
            str(BIN / "rtpipeline"),
            "run",
            "--dicom-root",
            str(drop),
            "--outdir",
            str(out),
            "--radiomics-params",
            str(ROOT / "tests" / "data" / "radiomics_fast.yaml"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    (key,) = [p.name for p in (out / "courses").iterdir()]
    proc, port = _webserver(out / ".dagster", out, drop, tmp_path / "webserver.log")
    try:
        with headless_chromium() as page:
            for asset in ("course_preview", "dvh"):
                page.goto(f"http://127.0.0.1:{port}/assets/{asset}?view=partitions&partition={key}")
                assert page.wait_for(CLICK_SHOW_MARKDOWN, 90), f"{asset}: no markdown metadata on the page"
                width = page.wait_for(IMAGE_WIDTH, 30)
                page.screenshot(tmp_path / f"{asset}.png")
                assert width and width > 100, f"{asset}: the preview image did not render"
            page.goto(f"http://127.0.0.1:{port}/assets/ct_image?view=checks")
            text = page.wait_for(
                "document.body && document.body.innerText.includes('frame_of_reference') && document.body.innerText", 60
            )
            assert text and "ct_geometry" in text
            # the column schema declared on the definition (rt_assets/table_schemas.py)
            page.goto(f"http://127.0.0.1:{port}/assets/cohort_dvh_metrics")
            # the descriptions render after the column names: wait for one
            described = "document.body && document.body.innerText.includes('pseudonymous course key')"
            text = page.wait_for(f"{described} && document.body.innerText", 60)
            page.screenshot(tmp_path / "cohort_dvh_metrics.png")
            # the table's first rows (it renders the rows in view): names, types' descriptions
            assert text and "pseudonymous course key" in text and "volume_cc" in text and "mean dose (Gy)" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
