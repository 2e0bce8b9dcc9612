"""Dose checks: units, coverage of the ROIs by the dose grid, and DVH table sanity."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rt_resources.qc.dose import dose_coverage, dose_units, dvh_sanity
from tests.qc.helpers import dvh_metrics, json_roundtrip, subset_masks

# --------------------------------------------------------------------------- dose units


def _dose_copy(course: Path, tmp_path: Path, edit_info=None, edit_manifest=None) -> Path:
    out = tmp_path / "course"
    out.mkdir()
    shutil.copy(course / "dose.nii.gz", out / "dose.nii.gz")
    info = json.loads((course / "dose.json").read_text())
    manifest = json.loads((course / "manifest.json").read_text())
    if edit_info:
        edit_info(info)
    if edit_manifest:
        edit_manifest(manifest)
    (out / "dose.json").write_text(json.dumps(info))
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def test_dose_units_passes_on_the_course(course):
    r = dose_units(course)
    assert r.passed, r.description
    assert r.metadata["prescription_gy"] == pytest.approx(70.0) and r.metadata["dose_type"] == "PHYSICAL"
    assert r.metadata["max_gy"] == pytest.approx(70.0, abs=0.1)
    assert {d["dose_units"] for d in r.metadata["rtdose"]} == {"GY"}
    json_roundtrip(r)


def test_dose_units_refuses_relative_dose(course, tmp_path):
    r = dose_units(_dose_copy(course, tmp_path, edit_info=lambda i: i.update(unit="RELATIVE")))
    assert not r.passed and r.severity == "ERROR" and "RELATIVE" in r.description


def test_dose_units_checks_the_rtdose_headers(course, tmp_path):
    def relative(m):
        next(f for f in m["files"] if f["kind"] == "RTDOSE")["info"]["dose_units"] = "RELATIVE"

    r = dose_units(_dose_copy(course, tmp_path, edit_manifest=relative))
    assert not r.passed and r.severity == "ERROR" and "DoseUnits RELATIVE" in r.description

    def mixed(m):
        next(f for f in m["files"] if f["kind"] == "RTDOSE")["info"]["dose_type"] = "EFFECTIVE"

    shutil.rmtree(tmp_path / "course")
    r = dose_units(_dose_copy(course, tmp_path, edit_manifest=mixed))
    assert not r.passed and r.severity == "ERROR" and "PHYSICAL and EFFECTIVE" in r.description


def test_dose_units_warns_without_prescription(course, tmp_path):
    r = dose_units(_dose_copy(course, tmp_path, edit_info=lambda i: i.update(prescription_gy=None)))
    assert not r.passed and r.severity == "WARN" and "no prescription" in r.description


def test_dose_units_warns_on_a_per_fraction_looking_dose(course, tmp_path):
    r = dose_units(_dose_copy(course, tmp_path, edit_info=lambda i: i.update(prescription_gy=2000.0)))
    assert not r.passed and r.severity == "WARN" and "x the prescription" in r.description


# --------------------------------------------------------------------------- dose coverage


def _cropped_dose(course: Path, tmp_path: Path, mask_name: str, axis: int) -> Path:
    """The dose grid cut along index ``axis`` through the middle of ``mask_name``."""
    dose = sitk.ReadImage(str(course / "dose.nii.gz"))
    mask = sitk.ReadImage(str(course / "masks" / "manual" / f"{mask_name}.nii.gz"))
    k, j, i = np.nonzero(sitk.GetArrayFromImage(mask))
    centre = mask.TransformContinuousIndexToPhysicalPoint([float(i.mean()), float(j.mean()), float(k.mean())])
    cut = int(round(dose.TransformPhysicalPointToContinuousIndex(centre)[axis]))
    size = list(dose.GetSize())
    size[axis] = cut
    path = tmp_path / "dose_cropped.nii.gz"
    sitk.WriteImage(sitk.RegionOfInterest(dose, size, [0, 0, 0]), str(path))
    return path


def test_dose_coverage_passes_on_the_course(course):
    r = dose_coverage(course / "dose.nii.gz", course / "masks" / "manual")
    assert r.passed, r.description
    table = {row["roi_name"]: row for row in r.metadata["rois"]}
    assert set(table) == {"BODY", "PTV", "PTV_boost", "Lung_L", "Lung_R", "Heart", "Spine", "SpinalCord"}
    assert table["PTV"]["target"] and not table["Heart"]["target"]
    assert all(row["uncovered_pct"] == 0 for row in table.values())
    json_roundtrip(r)


def test_dose_coverage_errors_when_the_ptv_sticks_out(course, tmp_path):
    dose = _cropped_dose(course, tmp_path, "PTV", axis=0)
    r = dose_coverage(dose, course / "masks" / "manual")
    assert not r.passed and r.severity == "ERROR"
    assert "target PTV:" in r.description
    ptv = next(row for row in r.metadata["rois"] if row["roi_name"] == "PTV")
    assert 20 < ptv["uncovered_pct"] < 80


def test_dose_coverage_warns_for_other_rois(course, tmp_path):
    dose = _cropped_dose(course, tmp_path, "Lung_L", axis=0)
    masks = subset_masks(course / "masks" / "manual", tmp_path / "masks", ["Lung_L", "Heart"])
    r = dose_coverage(dose, masks)
    assert not r.passed and r.severity == "WARN" and "Lung_L" in r.description and "Heart" not in r.description


# --------------------------------------------------------------------------- DVH sanity


def test_dvh_sanity_passes_on_consistent_rows():
    r = dvh_sanity(dvh_metrics())
    assert r.passed and r.metadata == {"n_rows": 2, "n_offending": 0, "offending": []}


def test_dvh_sanity_names_the_offending_rows():
    r = dvh_sanity(dvh_metrics(d98_gy=71.0))
    assert not r.passed and r.severity == "ERROR"
    (bad,) = r.metadata["offending"]
    assert bad["roi_name"] == "PTV" and bad["source"] == "manual" and "d2_gy 70.8000 < d50_gy" not in bad["what"]
    assert "d95_gy 66.0000 < d98_gy 71.0000" in bad["what"] and "PTV (manual)" in r.description
    for override, text in (
        ({"volume_cc": 0.0}, "volume_cc 0.0"),
        ({"mean_gy": float("nan")}, "not finite: ['mean_gy']"),
        ({"mean_gy": 75.0}, "mean_gy 75.0000 outside"),
        ({"d2_gy": 72.0}, "max_gy 71.0000 < d2_gy 72.0000"),
    ):
        r = dvh_sanity(dvh_metrics(**override))
        assert not r.passed and text in r.metadata["offending"][0]["what"], (override, r.metadata)
        json_roundtrip(r)


def test_dvh_sanity_fails_on_missing_columns():
    r = dvh_sanity(dvh_metrics().drop(columns=["d98_gy"]))
    assert not r.passed and r.severity == "ERROR" and r.metadata["missing_columns"] == ["d98_gy"]
