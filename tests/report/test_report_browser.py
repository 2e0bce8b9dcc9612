"""The cohort report opens in headless Chromium with every section filled and its figures drawn
(file:// URL: no server), and a screenshot of it is a real image."""

import json
import os

import pytest

from rt_resources.report import write_report
from tests.e2e.browser import chromium_path, headless_chromium
from tests.report.test_cohort_report import SECTION_IDS, write_fake_outdir

pytestmark = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("RT_REQUIRE_BROWSER"),
    reason="no chromium here (.ci/run installs it and sets RT_REQUIRE_BROWSER=1)",
)
WIDTH, HEIGHT = 1400, 1000

#: per section: data-filled, and the size of each of its SVGs as laid out
SECTIONS = """JSON.stringify([...document.querySelectorAll('section')].map(s => ({
  id: s.id,
  filled: s.dataset.filled,
  svgs: [...s.querySelectorAll('svg')].map(v => { const r = v.getBoundingClientRect(); return [r.width, r.height]; }),
})))"""
VIEWPORT = "JSON.stringify([window.innerWidth, window.innerHeight, window.devicePixelRatio])"


def test_report_renders_in_chromium(tmp_path):
    summary = write_report(write_fake_outdir(tmp_path / "out"), tmp_path / "report.html")

    with headless_chromium(WIDTH, HEIGHT) as page:
        page.goto(summary.path.as_uri())
        assert page.wait_for("document.readyState === 'complete' && document.querySelectorAll('section').length")
        sections = json.loads(page.evaluate(SECTIONS))
        width, height, ratio = json.loads(page.evaluate(VIEWPORT))
        shot = tmp_path / "report.png"
        page.screenshot(shot)

    assert [s["id"] for s in sections] == SECTION_IDS
    assert all(s["filled"] == "true" for s in sections), sections
    by_id = {s["id"]: s["svgs"] for s in sections}
    for section_id in ("qc", "dvh-bands", "agreement", "robustness"):
        assert by_id[section_id] and all(w > 100 and h > 50 for w, h in by_id[section_id]), (section_id, by_id)

    from PIL import Image

    with Image.open(shot) as image:
        assert image.format == "PNG"
        assert image.size == (round(width * ratio), round(height * ratio))
        grey = image.convert("L")
        low, high = grey.getextrema()
        assert high - low > 100  # text and figures on a light page, not a blank one
        assert len(grey.getcolors(maxcolors=256 * 256) or range(257)) > 16
