"""QC results: a check that raises is a failed ERROR; the qc.json document counts and round-trips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from rt_resources.qc.dose import dvh_sanity
from rt_resources.qc.geometry import ct_geometry, frame_of_reference
from rt_resources.qc.radiomics import radiomics_nan
from rt_resources.qc.results import QcResult, from_dict, qc_json, run_guarded
from tests.qc.helpers import dvh_metrics, radiomics_frame


def test_run_guarded_turns_an_exception_into_a_failed_error(manifest, tmp_path):
    def broken(x):
        raise RuntimeError(f"cannot read {x}")

    r = run_guarded(broken, "dose.nii.gz", name="dose_coverage", asset="dose_grid")
    assert (r.name, r.asset, r.passed, r.severity) == ("dose_coverage", "dose_grid", False, "ERROR")
    assert "RuntimeError: cannot read dose.nii.gz" in r.description and r.metadata["exception"] == "RuntimeError"

    # a real check meeting a file that changed after the manifest: ManifestError, a failed check
    m = dataclasses.replace(manifest, drop_root=tmp_path)
    r = run_guarded(ct_geometry, m, name="ct_geometry", asset="ct_image")
    assert not r.passed and r.severity == "ERROR" and "ManifestError" in r.description

    r = run_guarded(lambda: None, name="x", asset="dvh")
    assert not r.passed and "returned NoneType" in r.description
    r = run_guarded(dvh_sanity, dvh_metrics(), name="dvh_checks", asset="dvh")
    assert r.passed and r.name == "dvh_checks"


def test_qc_json_counts_and_round_trips(manifest):
    results = [
        frame_of_reference(manifest),
        dvh_sanity(dvh_metrics(d98_gy=80.0)),
        radiomics_nan(radiomics_frame().assign(original_f0=np.nan, original_f1=np.nan)),
        QcResult(
            "x",
            "dvh",
            True,
            "WARN",
            "ok",
            {"n": np.int64(3), "v": np.float32(0.5), "nan": float("nan"), "t": (1, 2), "p": Path("a")},
        ),
    ]
    doc = qc_json(results, course_key="c-123")
    assert doc["schema"] == "rtpipeline.qc/1" and doc["course_key"] == "c-123" and doc["status"] == "FAIL"
    assert doc["counts"] == {
        "total": 4,
        "passed": 2,
        "failed": 2,
        "passed_by_severity": {"ERROR": 1, "WARN": 1},
        "failed_by_severity": {"ERROR": 1, "WARN": 1},
    }
    back = json.loads(json.dumps(doc, allow_nan=False))
    assert [from_dict(d) for d in back["results"]] == results
    assert back["results"][3]["metadata"] == {"n": 3, "v": 0.5, "nan": None, "t": [1, 2], "p": "a"}
    assert qc_json(results[2:])["status"] == "WARN" and qc_json([results[0]])["status"] == "PASS"
    with pytest.raises(ValueError, match="severity"):
        QcResult("x", "dvh", True, "INFO", "", {})
