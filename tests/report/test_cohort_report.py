"""`rtpipeline report`: one self-contained HTML page about a cohort, from a fake data root whose
tables have the pipeline's exact column layouts (3 courses, a few ROIs, their DVH curves)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rt_resources.report import ReportError, read_cohort, write_report
from rt_resources.report.bands import dvh_bands
from rt_resources.report.sections import NO_AGREEMENT, feature_class

KEYS = ["c-00000000000a", "c-00000000000b", "c-00000000000c"]
PATIENT_NAME, PATIENT_ID = "DOE^JANE", "MRN0042"
SECTION_IDS = ["qc", "dvh-bands", "unmapped", "agreement", "robustness", "unused"]
#: (roi_name, source, roi_std, D50 in Gy of its synthetic DVH)
ROIS = [
    ("PTV", "manual", "PTV", 60.0),
    ("Parotid L", "manual", "Parotid_L", 26.0),
    ("parotid_gland_left", "totalseg", "Parotid_L", 5.0),  # a manual one exists: never in the band
    ("Lung_L", "manual", "Lung_L", 12.0),
    ("liver", "totalseg", "Liver", 8.0),
    ("odd_struct", "totalseg", None, 15.0),  # unmapped: grouped by its ROI name
]


def _curve(key: str, roi: str, source: str, d50: float, shift: float) -> pd.DataFrame:
    dose = np.round(np.arange(0.0, 70.0, 0.1), 1)
    return pd.DataFrame(
        {
            "course_key": key,
            "roi_name": roi,
            "source": source,
            "dose_gy": dose,
            "volume_cc": 50.0 / (1 + np.exp((dose - d50 - shift) / 2.0)),
            "volume_pct": 100.0 / (1 + np.exp((dose - d50 - shift) / 2.0)),
        }
    )


def write_fake_outdir(out: Path) -> Path:
    """A data root with every cohort table of the report and each course's dvh_curves.parquet."""
    cohort = out / "cohort"
    cohort.mkdir(parents=True)
    pd.DataFrame({"course_key": KEYS, "patient_id": [PATIENT_ID] * 3, "patient_name": [PATIENT_NAME] * 3}).to_parquet(
        cohort / "courses.parquet"
    )
    checks = [
        ("ct_image", "ct_geometry", "ERROR"),
        ("dose_grid", "dose_coverage", "ERROR"),
        ("masks", "overlap", "WARN"),
    ]
    fails = {(KEYS[1], "overlap"), (KEYS[2], "dose_coverage"), (KEYS[2], "overlap")}
    pd.DataFrame(
        [
            {
                "course_key": k,
                "asset": asset,
                "check": check,
                "passed": (k, check) not in fails,
                "severity": severity,
                "description": f"{check} of {k}",
                "metadata": json.dumps({"value": 1.0}),
            }
            for k in KEYS
            for asset, check, severity in checks
        ]
    ).to_parquet(cohort / "qc.parquet")
    metrics, curves = [], {k: [] for k in KEYS}
    for i, key in enumerate(KEYS):
        for roi, source, std, d50 in ROIS:
            mean = d50 + i
            metrics.append(
                {
                    "course_key": key,
                    "roi_name": roi,
                    "source": source,
                    "method": "contour" if source == "manual" else "mask",
                    "volume_cc": 50.0,
                    "mean_gy": mean,
                    "min_gy": 0.0,
                    "max_gy": 70.0,
                    "d2_gy": mean + 5,
                    "d50_gy": mean,
                    "d95_gy": mean - 5,
                    "d98_gy": mean - 6,
                    "d1cc_gy": mean + 6,
                    "d0_1cc_gy": mean + 7,
                    "v20gy_pct": 40.0,
                    "roi_std": std,
                    "mean_eqd2_gy": mean * 0.9,
                    "d2_eqd2_gy": (mean + 5) * 0.9,
                    "alpha_beta_gy": 3.0,
                }
            )
            curves[key].append(_curve(key, roi, source, d50, shift=2.0 * i))
    pd.DataFrame(metrics).to_parquet(cohort / "dvh_metrics.parquet")
    for key, parts in curves.items():
        (out / "courses" / key).mkdir(parents=True)
        pd.concat(parts, ignore_index=True).to_parquet(out / "courses" / key / "dvh_curves.parquet")
    pd.DataFrame(
        [
            {
                "course_key": k,
                "roi_std": std,
                "roi_name_manual": manual,
                "roi_name_auto": auto,
                "source_auto": "totalseg",
                "dice": dice - 0.02 * i,
                "hd95_mm": 4.0 + i,
                "msd_mm": 1.0 + 0.1 * i,
                "volume_ratio": 1.05,
                "mean_gy_diff": 0.4,
                "d2_gy_diff": 0.8,
            }
            for i, k in enumerate(KEYS)
            for std, manual, auto, dice in [
                ("Parotid_L", "Parotid L", "parotid_gland_left", 0.8),
                ("Lung_L", "Lung_L", "lung_left", 0.95),
            ]
        ]
    ).to_parquet(cohort / "agreement.parquet")
    features = [
        ("original_shape_MeshVolume", 0.99),
        ("original_shape_Sphericity", 0.93),
        ("original_firstorder_Mean", 0.95),
        ("original_firstorder_Kurtosis", 0.6),
        ("original_glcm_Contrast", 0.8),
        ("original_glcm_Idm", 0.91),
        ("original_glrlm_RunEntropy", 0.7),
        ("original_glszm_ZonePercentage", 0.5),
        ("original_gldm_DependenceEntropy", 0.85),
        ("original_ngtdm_Busyness", np.nan),
    ]
    pd.DataFrame(
        {
            "feature": [f for f, _ in features],
            "icc": [v for _, v in features],
            "ci_low": [v - 0.1 for _, v in features],
            "ci_high": [min(v + 0.05, 1.0) for _, v in features],
            "n_subjects": 9,
            "n_raters": 3,
            "robust": [bool(v >= 0.9) for _, v in features],
        }
    ).to_parquet(cohort / "radiomics_robustness.parquet")
    pd.DataFrame(
        {
            "file_id": ["f-0000000000a1", "f-0000000000a2", "f-0000000000a3"],
            "path": [f"{PATIENT_NAME}/RTDOSE_1.dcm", "notes.txt", f"{PATIENT_NAME}/CT/CT_0006.dcm"],
            "reason": [
                "RTDOSE whose plan 1.2.826.0.1.3680043.8.498.1 is not in the drop",
                "not a DICOM file",
                f"CT series with a missing slice: {PATIENT_NAME}/CT/CT_0006.dcm",
            ],
            "kind": ["RTDOSE", "", "CT"],
            "course_key": ["", "", KEYS[2]],
            "stage": ["", "", "ct_image"],
        }
    ).to_parquet(cohort / "ingest_report.parquet")
    pd.DataFrame(
        {
            "roi_name": ["odd_struct", "Lung<L>"],
            "source": ["totalseg", "manual"],
            "n_courses": [3, 1],
            "n_rows": [3, 1],
            "candidates": ["", "Lung_L; Lung_LUL"],  # "; "-separated, as cohort_unmapped_rois writes them
            "reason": ["no TG-263 name matches", "no TG-263 name matches"],
        }
    ).to_parquet(cohort / "unmapped_rois.parquet")
    return out


class _Sections(HTMLParser):
    """Each <section>'s id and data-filled, and the tags seen."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: dict[str, str] = {}
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        a = dict(attrs)
        if tag == "section":
            self.sections[a["id"]] = a["data-filled"]


def _parse(text: str) -> _Sections:
    parser = _Sections()
    parser.feed(text)
    return parser


def _section_html(text: str, section_id: str) -> str:
    return re.search(rf'<section id="{section_id}".*?</section>', text, re.S).group(0)


@pytest.fixture
def fake_out(tmp_path) -> Path:
    return write_fake_outdir(tmp_path / "out")


def test_every_section_filled_and_nothing_identifying(fake_out, monkeypatch):
    read = []
    original = pd.read_parquet
    monkeypatch.setattr(
        pd, "read_parquet", lambda path, *a, **k: read.append(Path(path).name) or original(path, *a, **k)
    )
    summary = write_report(fake_out, fake_out / "report.html")
    assert "courses.parquet" not in read  # the key map is never opened
    text = summary.path.read_text()

    assert summary.path == (fake_out / "report.html").resolve() and summary.n_courses == 3
    assert summary.sections == dict.fromkeys(SECTION_IDS, True), summary.why_empty
    parsed = _parse(text)
    assert parsed.sections == dict.fromkeys(SECTION_IDS, "true")
    assert parsed.tags.count("svg") >= 4  # failed checks, DVH bands, Dice, ICC
    assert "<script" not in text.lower()
    for identifier in (PATIENT_NAME, PATIENT_ID, "DOE", "JANE"):
        assert identifier not in text
    urls = set(re.findall(r"https?://[^\"'\s<>)]+", text))
    assert urls <= {"http://www.w3.org/2000/svg", "http://www.w3.org/1999/xlink"}, urls  # namespaces only
    assert all(h.startswith("#") for h in re.findall(r'href="([^"]*)"', text))

    header = re.search(r"<header>.*?</header>", text, re.S).group(0)
    assert "<dd>out</dd>" in header and str(fake_out.parent) not in header  # the folder name only
    assert "<dd>3</dd>" in header and " UTC" in header
    from importlib.metadata import version

    assert version("rtpipeline") in header

    qc = _section_html(text, "qc")
    assert "1 ok, 1 warn, 1 error" in qc
    assert re.search(rf"<tr class=\"error\"><td>{KEYS[2]}</td>.*?dose_coverage, overlap \(warn\)", qc)
    dvh = _section_html(text, "dvh-bands")
    assert "Parotid_L (n=3)" in dvh and "odd_struct (n=3)" in dvh and "manual contour" in dvh
    assert "have no standard name" in dvh
    unmapped = _section_html(text, "unmapped")
    assert "<td>Lung&lt;L&gt;</td><td>manual</td>" in unmapped and "Lung_L; Lung_LUL" in unmapped  # escaped
    agreement = _section_html(text, "agreement")
    assert "Parotid_L" in agreement and "0.78" in agreement  # median Dice of 0.80, 0.78, 0.76
    robustness = _section_html(text, "robustness")
    for cls in ("shape", "firstorder", "glcm", "glrlm", "glszm", "gldm", "ngtdm"):
        assert f"<td>{cls}</td>" in robustness
    unused = _section_html(text, "unused")
    assert "f-0000000000a3" in unused and "CT_0006" not in unused  # the path, scrubbed from the reason too
    assert "<td>RTDOSE whose plan &lt;UID&gt; is not in the drop</td><td class=num>1</td>" in unused  # counts


def test_absent_tables_say_why(fake_out):
    for name in ("agreement.parquet", "unmapped_rois.parquet"):
        (fake_out / "cohort" / name).unlink()
    robustness = pd.read_parquet(fake_out / "cohort" / "radiomics_robustness.parquet")
    robustness.iloc[:0].to_parquet(fake_out / "cohort" / "radiomics_robustness.parquet")  # robustness off
    metrics = pd.read_parquet(fake_out / "cohort" / "dvh_metrics.parquet")
    metrics.drop(columns=["roi_std"]).to_parquet(fake_out / "cohort" / "dvh_metrics.parquet")  # an older output
    (fake_out / "cohort" / "qc.parquet").write_bytes(b"not parquet")

    summary = write_report(fake_out)
    assert summary.path == (fake_out / "cohort" / "report.html").resolve()
    assert summary.sections == {
        "qc": False,
        "dvh-bands": True,
        "unmapped": False,
        "agreement": False,
        "robustness": False,
        "unused": True,
    }
    text = summary.path.read_text()
    assert _parse(text).sections["agreement"] == "false"
    assert NO_AGREEMENT in _section_html(text, "agreement")
    assert "--radiomics-robustness" in _section_html(text, "robustness")
    assert "could not be read" in _section_html(text, "qc")
    dvh = _section_html(text, "dvh-bands")
    assert "has no roi_std column" in dvh and "Parotid L (n=3)" in dvh and "parotid_gland_left (n=3)" in dvh


def test_a_course_without_qc_is_listed(fake_out):
    (fake_out / "courses" / "c-00000000000d").mkdir()
    summary = write_report(fake_out)
    qc = _section_html(summary.path.read_text(), "qc")
    assert summary.n_courses == 4 and "1 without QC results" in qc
    assert '<tr class="no-qc"><td>c-00000000000d</td>' in qc


def test_dvh_band_prefers_the_manual_contour():
    curves = pd.concat(
        [
            _curve(k, roi, source, d50, 0.0)
            for k in KEYS
            for roi, source, d50 in [("Parotid L", "manual", 26.0), ("parotid_gland_left", "totalseg", 5.0)]
        ]
    )
    metrics = curves[["course_key", "roi_name", "source"]].drop_duplicates().assign(roi_std="Parotid_L")
    (band,), note = dvh_bands(curves, metrics)
    assert band.label == "Parotid_L" and band.n_courses == 3
    assert np.interp(50.0, band.median_pct[::-1], band.dose_gy[::-1]) == pytest.approx(26.0, abs=0.1)
    assert "TG-263" in note
    # one course only: no band
    assert dvh_bands(curves[curves["course_key"] == KEYS[0]], metrics)[0] == []


def test_feature_class():
    assert feature_class("original_glcm_Contrast") == "glcm"
    assert feature_class("wavelet-LLH_firstorder_Mean") == "firstorder"
    assert feature_class("log-sigma-1-0-mm-3D_glszm_ZonePercentage") == "glszm"
    assert feature_class("Volume") == "other"


def test_no_cohort_tables(tmp_path):
    with pytest.raises(ReportError, match=re.escape(str(tmp_path / "cohort"))):
        read_cohort(tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    return subprocess.run(
        [sys.executable, "-m", "rt_assets.cli", "report", *args], capture_output=True, text=True, env=env, timeout=300
    )


def test_cli(fake_out, tmp_path):
    proc = _cli("--outdir", str(fake_out))
    assert proc.returncode == 0, proc.stderr
    written = fake_out.resolve() / "cohort" / "report.html"
    assert proc.stdout.strip() == str(written) and written.is_file()

    to = tmp_path / "elsewhere" / "cohort.html"
    proc = _cli("--outdir", str(fake_out), "--to", str(to))
    assert proc.returncode == 0 and proc.stdout.strip() == str(to.resolve()) and to.is_file()

    empty = tmp_path / "empty"
    empty.mkdir()
    proc = _cli("--outdir", str(empty))
    assert proc.returncode == 2 and proc.stdout == ""
    assert str(empty / "cohort") in proc.stderr and "no cohort tables" in proc.stderr


def test_no_drop_path_in_the_page_even_of_files_the_table_does_not_list(tmp_path):
    """The linker names the kept copy of a duplicate and the files of a conflict in its reasons:
    those paths (patient-named folders, with spaces) never reach the page, nor the folders above
    the data root."""
    import pandas as pd

    out = write_fake_outdir(tmp_path / "DOE^JANE study" / "out")
    ingest = pd.DataFrame(
        {
            "file_id": ["f-aaaaaaaaaaaa", "f-bbbbbbbbbbbb"],
            "path": ["Doe Jane/ct/1-1.dcm", "Roe Richard/ct/x.dcm"],
            "reason": [
                "duplicate of Doe Jane/first copy/1-1.dcm (same SOP Instance UID, identical content)",
                "SOP Instance UID 1.2.3.4.5 is in 2 files with different content (Roe Richard/ct/x.dcm, "
                "Roe Richard/old export/x.dcm); none is used until the conflict is resolved",
            ],
            "kind": ["CT", "CT"],
            "course_key": ["", ""],
            "stage": ["", ""],
        }
    )
    ingest.to_parquet(out / "cohort" / "ingest_report.parquet")
    html = write_report(out, tmp_path / "r.html").path.read_text()
    for leak in ("Doe", "Jane", "Roe Richard", "first copy", "old export", "DOE^JANE"):
        assert leak not in html, leak
    assert "f-bbbbbbbbbbbb" in html and "&lt;a file of the drop&gt;" in html
