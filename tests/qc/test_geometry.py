"""CT checks: frame of reference and CT geometry pass on a good course and fail on a broken copy."""

from __future__ import annotations

import copy
import shutil

import pytest

from rt_resources.ingest.manifest import Manifest
from rt_resources.qc.geometry import ct_geometry, frame_of_reference
from tests.qc.helpers import json_roundtrip

# --------------------------------------------------------------------------- frame of reference


def test_frame_of_reference_passes_on_the_course(manifest):
    r = frame_of_reference(manifest)
    assert r.passed and r.name == "frame_of_reference" and r.severity == "ERROR"
    assert r.metadata["ct_frame_of_reference"] == manifest.frame_of_reference_uid
    assert len(r.metadata["for_by_kind"]["RTDOSE"]) == 2 and len(r.metadata["for_by_kind"]["RTSTRUCT"]) == 1
    json_roundtrip(r)


def test_frame_of_reference_fails_on_a_dose_or_structure_set_elsewhere(manifest):
    other = "1.2.3.4.5.999"
    m = manifest.to_json()  # a copy to edit
    dose = next(f for f in m["files"] if f["kind"] == "RTDOSE")
    dose["frame_of_reference_uid"] = other
    r = frame_of_reference(Manifest.from_json(m))
    assert not r.passed and r.severity == "ERROR"
    assert dose["path"] in r.description and other in r.description
    assert r.metadata["for_by_kind"]["RTDOSE"][dose["sop_instance_uid"]] == other

    m = copy.deepcopy(manifest.to_json())
    struct = next(f for f in m["files"] if f["kind"] == "RTSTRUCT")
    struct["info"]["ref_for_uids"] = struct["info"]["roi_for_uids"] = [other]
    r = frame_of_reference(Manifest.from_json(m))
    assert not r.passed and "RTSTRUCT" in r.description and other in r.description

    m = manifest.to_json()
    next(f for f in m["files"] if f["kind"] == "CT")["frame_of_reference_uid"] = other
    r = frame_of_reference(Manifest.from_json(m))
    assert not r.passed and "CT slices carry 2 frames of reference" in r.description


# --------------------------------------------------------------------------- CT geometry


def test_ct_geometry_passes_on_the_course(manifest):
    r = ct_geometry(manifest)
    assert r.passed, r.description
    md = r.metadata
    assert md["n_slices"] == 24 and md["slice_spacing_mm"] == pytest.approx(8.0)
    assert md["slice_thickness_mm"] == [8.0] and md["pixel_spacing_mm"] == [[8.0, 8.0]]
    assert md["max_gap_deviation_mm"] == pytest.approx(0.0) and md["missing_slices"] == 0
    json_roundtrip(r)


def test_ct_geometry_fails_on_a_missing_slice(manifest, tmp_path):
    drop = manifest.drop_root
    shutil.copytree(drop, tmp_path / "drop")  # never touch the original files
    m = manifest.to_json()
    m["drop_root"] = str(tmp_path / "drop")
    ct = sorted((f for f in m["files"] if f["kind"] == "CT"), key=lambda f: f["path"])
    gone = ct[len(ct) // 2]
    (tmp_path / "drop" / gone["path"]).unlink()
    m["files"] = [f for f in m["files"] if f is not gone]
    r = ct_geometry(Manifest.from_json(m))
    assert not r.passed and r.severity == "ERROR"
    assert "missing slice" in r.description and r.metadata["missing_slices"] == 1
    assert r.metadata["n_slices"] == 23 and r.metadata["max_gap_mm"] == pytest.approx(16.0)
