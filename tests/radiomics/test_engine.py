"""Radiomics engine: selection, equality of pool/sequential/direct pyradiomics, shipped params, IBSI phantom."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from radiomics.featureextractor import RadiomicsFeatureExtractor

from rt_resources.radiomics import PARAMS_DIR, RadiomicsSettings, RadiomicsTask, run_tasks, select_tasks
from rt_resources.radiomics.course import ID_COLUMNS, course_radiomics
from rt_resources.radiomics.engine import extract_one

IBSI = Path("/work/shared/data/ibsi-digital-phantom/nifti")


def _features(raw: dict) -> dict[str, float]:
    return {k: float(v) for k, v in raw.items() if not k.startswith("diagnostics_")}


def _assert_same(a: dict[str, float], b: dict[str, float]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k] == pytest.approx(b[k], rel=1e-6, abs=1e-6), k


def test_select_tasks_skips_couch_and_tiny(synth):
    tasks, skipped = select_tasks(synth["masks"], RadiomicsSettings(params=synth["params"]))
    assert [(t.roi_name, t.source) for t in tasks] == [("ROI_A", "manual"), ("ROI_B", "manual"), ("Box GTV", "manual")]
    reasons = {s["roi_name"]: s["reason"] for s in skipped}
    assert set(reasons) == {"Couch_Top", "tiny"}
    assert "couch" in reasons["Couch_Top"] and "3 voxels" in reasons["tiny"]
    assert all(t.n_voxels >= 10 for t in tasks)


def test_parallel_equals_sequential_equals_direct(synth, caplog):
    settings = RadiomicsSettings(params=synth["params"], light_params=None)
    tasks, _ = select_tasks(synth["masks"], settings)
    caplog.set_level(logging.INFO, logger="rtpipeline.radiomics")
    par, par_fail = run_tasks(synth["image"], tasks, settings, workers=2)
    seq, seq_fail = run_tasks(synth["image"], tasks, settings, workers=2, sequential=True)
    assert par_fail == seq_fail == []
    assert "Enabled parallel radiomics processing: 2 workers (cores-1), thread_limit=1" in caplog.text
    extractor = RadiomicsFeatureExtractor(str(synth["params"]))
    for task, p, s in zip(tasks, par, seq, strict=True):
        assert (p["roi_name"], p["source"]) == (s["roi_name"], s["source"]) == (task.roi_name, task.source)
        direct = _features(extractor.execute(str(synth["image"]), str(task.mask_path)))
        p_feats = {k: v for k, v in p.items() if k not in ("roi_name", "source")}
        s_feats = {k: v for k, v in s.items() if k not in ("roi_name", "source")}
        _assert_same(p_feats, direct)
        _assert_same(s_feats, direct)
        assert "original_shape_MeshVolume" in p_feats and "original_firstorder_Mean" in p_feats


def test_shipped_params_load_and_run(synth):
    task = next(t for t in select_tasks(synth["masks"])[0] if t.roi_name == "ROI_B")
    ct = extract_one(synth["image"], task, RadiomicsSettings())
    classes = {k.split("_")[1] for k in ct}
    assert classes == {"firstorder", "shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm"}
    assert any(k.startswith("log-sigma-5-0-mm-3D_") for k in ct) and any(k.startswith("wavelet-") for k in ct)
    mr = extract_one(synth["image"], task, RadiomicsSettings(params=PARAMS_DIR / "MR.yaml", light_params=None))
    assert all(k.startswith("original_") for k in mr) and len(mr) > 100
    light = RadiomicsFeatureExtractor(str(PARAMS_DIR / "CT_light.yaml"))
    assert list(light.enabledImagetypes) == ["Original"] and light.settings["resampledPixelSpacing"] == [3, 3, 3]
    # the basic set: first-order and shape of the original image, each value the full set's
    basic = extract_one(synth["image"], task, RadiomicsSettings(policy="basic"))
    assert {k.split("_")[1] for k in basic} == {"firstorder", "shape"} and all(k.startswith("original_") for k in basic)
    for name, value in basic.items():
        assert value == pytest.approx(ct[name], rel=1e-6, abs=1e-9), name


def test_large_roi_gets_light_params():
    settings = RadiomicsSettings(max_voxels_full=100)
    assert settings.params_for(RadiomicsTask("small", "s", Path("m"), 100)) == settings.params
    assert settings.params_for(RadiomicsTask("big", "s", Path("m"), 101)) == settings.light_params


def test_course_radiomics_table(synth):
    settings = RadiomicsSettings(params=synth["params"], light_params=None)
    frame, summary = course_radiomics(synth["image"], synth["masks"], "P1/C1", settings, workers=2, sequential=True)
    assert list(frame.columns[:3]) == ID_COLUMNS
    assert list(frame["roi_name"]) == ["Box GTV", "ROI_A", "ROI_B"]
    assert (frame["course_key"] == "P1/C1").all() and "patient_id" not in frame.columns
    assert "original_shape_MeshVolume" in frame.columns
    assert summary["n_tasks"] == summary["n_ok"] == 3 and summary["failures"] == []
    assert {s["roi_name"] for s in summary["skipped"]} == {"Couch_Top", "tiny"}
    assert summary["pyradiomics_version"] and len(summary["params_sha256"]) == 64 and summary["seconds"] >= 0
    # per ROI: its parameter set and why, its size and CPU seconds; their sums by size and set
    assert [(r["roi_name"], r["param_set"], r["ok"]) for r in summary["rois"]] == [
        ("ROI_A", "full", True),
        ("ROI_B", "full", True),
        ("Box GTV", "full", True),
    ]
    assert all(r["n_voxels"] >= 10 and r["volume_cc"] > 0 and r["cpu_s"] > 0 for r in summary["rois"])
    assert summary["core_seconds"]["by_param_set"]["full"]["n_rois"] == 3


@pytest.mark.skipif(not (IBSI / "image" / "phantom.nii.gz").is_file(), reason="IBSI digital phantom not present")
def test_ibsi_digital_phantom(tmp_path):
    params = tmp_path / "ibsi.yaml"
    params.write_text("imageType:\n  Original: {}\nfeatureClass:\n  firstorder:\n  shape:\nsetting:\n  label: 1\n")
    task = RadiomicsTask("phantom", "ibsi", IBSI / "mask" / "mask.nii.gz")
    f = extract_one(IBSI / "image" / "phantom.nii.gz", task, RadiomicsSettings(params=params, light_params=None))
    assert f["original_shape_MeshVolume"] == pytest.approx(556, abs=4)
    assert f["original_shape_VoxelVolume"] == pytest.approx(592, abs=4)
    assert f["original_shape_SurfaceArea"] == pytest.approx(388, abs=3)
    assert f["original_firstorder_Mean"] == pytest.approx(2.15, abs=0.01)
    assert f["original_firstorder_Minimum"] == 1 and f["original_firstorder_Maximum"] == 6
