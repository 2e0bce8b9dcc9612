"""`rtpipeline report` on a drop processed as `make demo` does (synthetic courses with a boost, the
TotalSegmentator stand-in for automatic organs, radiomics robustness, a file that is not DICOM):
the page opens in headless Chromium with every section filled and its figures drawn."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from rt_resources.synthetic import write_patient
from tests.e2e.browser import chromium_path, headless_chromium
from tests.helpers import FAST_RADIOMICS, SMALL

BIN = Path(sys.executable).parent
pytestmark = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("RT_REQUIRE_BROWSER"),
    reason="no chromium here (.ci/run installs it and sets RT_REQUIRE_BROWSER=1)",
)
SECTIONS = """JSON.stringify([...document.querySelectorAll('section')].map(s => ({
  id: s.id, filled: s.dataset.filled, text: s.innerText.slice(0, 5000),
  svgs: [...s.querySelectorAll('svg')].map(v => { const r = v.getBoundingClientRect(); return [r.width, r.height]; }),
})))"""


def rtpipeline(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.run([str(BIN / "rtpipeline"), *args], env=env, capture_output=True, text=True, timeout=1200)


def test_report_of_a_processed_drop_has_every_section(tmp_path):
    drop, out = tmp_path / "drop", tmp_path / "out"
    for i in range(2):
        write_patient(drop, i, dataclasses.replace(SMALL, boost=True))
    (drop / "notes.txt").write_text("export notes, not DICOM")
    run = rtpipeline(
        "run",
        *("--dicom-root", str(drop), "--outdir", str(out)),
        *("--radiomics-params", str(FAST_RADIOMICS), "--radiomics-robustness", "2"),
        *("--totalseg-backend", "standin", "--totalseg-device", "cpu"),
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    report = rtpipeline("report", "--outdir", str(out))
    assert report.returncode == 0, report.stderr
    page_path = out / "cohort" / "report.html"
    assert str(page_path) in report.stdout

    with headless_chromium(1400, 1000) as page:
        page.goto(page_path.as_uri())
        assert page.wait_for("document.readyState === 'complete' && document.querySelectorAll('section').length")
        sections = json.loads(page.evaluate(SECTIONS))
        page.screenshot(tmp_path / "report.png")
    html = page_path.read_text()
    assert sections and all(s["filled"] == "true" for s in sections), sections
    svgs = {s["id"]: s["svgs"] for s in sections}
    for section in ("qc", "dvh-bands", "agreement", "robustness"):
        assert svgs[section] and all(w > 100 and h > 50 for w, h in svgs[section]), (section, svgs)
    text = {s["id"]: s["text"] for s in sections}
    assert "Heart" in text["agreement"] or "SpinalCord" in text["agreement"], text["agreement"]  # by roi_std
    assert "not a DICOM file" in html
    assert "Synthetic^Patient" not in html and "SYNTH" not in html  # course keys only, never the patient
