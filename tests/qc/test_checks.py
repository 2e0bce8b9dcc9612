"""The QC engine: every check passes on a good synthetic course and fails on a broken copy."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk

from rt_resources.ingest.manifest import primary_structure_set, read_manifest, source_files
from rt_resources.qc import checks as qc
from rt_resources.structures.rasterize import fill_polygons
from rt_resources.structures.rtstruct import read_rois
from rt_resources.synthetic import SynthOptions, write_patient
from tests.conftest import copy_shared

OPTIONS = SynthOptions(rows=48, slices=24, pixel_mm=8.0, slice_mm=8.0, boost=True)
GOOD_ROIS = ("BODY", "PTV", "PTV_boost", "Lung_L", "Lung_R", "Heart")  # inside the scan, resolved


def _materialize(drop: Path, data_root: Path, with_dose: bool = True) -> Path:
    """Run the course assets on ``drop`` (one course) and return its course folder."""
    from dagster import instance_for_test, materialize

    from rt_assets.assets.course.course_manifest import course_manifest
    from rt_assets.assets.course.ct_image import ct_image
    from rt_assets.assets.course.dose_grid import dose_grid
    from rt_assets.assets.course.structure_masks import structure_masks
    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop
    from rt_resources.resources import DataRoot, DicomDrop

    assets = [course_manifest, ct_image, structure_masks] + ([dose_grid] if with_dose else [])
    with pytest.MonkeyPatch.context() as mp, instance_for_test() as instance:
        mp.setenv("RT_SITE_SECRET", "test-secret")
        (key,) = [c.key for c in survey_drop(drop, data_root).courses]
        instance.add_dynamic_partitions(course_partitions.name, [key])
        resources = {
            "data_root": DataRoot(path=str(data_root)),
            "dicom_drop": DicomDrop(path=str(drop), quiet_period_s=0),
        }
        assert materialize(assets, partition_key=key, instance=instance, resources=resources).success
    return data_root / "courses" / key


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    """A synthetic course (primary + boost, 48x48x24 CT of 8 mm voxels) through the course assets."""
    root = tmp_path_factory.mktemp("qc_course")
    write_patient(root / "drop", 0, OPTIONS)
    return _materialize(root / "drop", root / "data")


@pytest.fixture(scope="module")
def manifest(course) -> dict:
    return read_manifest(course)


@pytest.fixture(scope="module")
def rois(manifest):
    uid = primary_structure_set(manifest)
    (struct,) = [f for f in source_files(manifest, "RTSTRUCT") if f["sop_instance_uid"] == uid]
    return read_rois(struct["abspath"])


def _subset(masks: Path, dest: Path, names) -> Path:
    """A copy of a masks folder with only ``names`` (rois.json filtered)."""
    dest.mkdir(parents=True)
    records = [r for r in json.loads((masks / "rois.json").read_text()) if r["roi_name"] in names]
    for r in records:
        shutil.copy(masks / r["file"], dest / r["file"])
    (dest / "rois.json").write_text(json.dumps(records))
    return dest


def _edit_mask(path: Path, edit) -> None:
    image = sitk.ReadImage(str(path))
    arr = sitk.GetArrayFromImage(image)
    edit(arr)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(path), True)


def _json_roundtrip(result: qc.QcResult) -> None:
    text = json.dumps(qc.to_dict(result), allow_nan=False)  # strict JSON: no NaN, numpy types
    assert qc.from_dict(json.loads(text)) == result


# --------------------------------------------------------------------------- 1. frame of reference


def test_frame_of_reference_passes_on_the_course(manifest):
    r = qc.frame_of_reference(manifest)
    assert r.passed and r.name == "frame_of_reference" and r.severity == "ERROR"
    assert r.metadata["ct_frame_of_reference"] == manifest["frame_of_reference_uid"]
    assert len(r.metadata["for_by_kind"]["RTDOSE"]) == 2 and len(r.metadata["for_by_kind"]["RTSTRUCT"]) == 1
    _json_roundtrip(r)


def test_frame_of_reference_fails_on_a_dose_or_structure_set_elsewhere(manifest):
    other = "1.2.3.4.5.999"
    m = copy.deepcopy(manifest)
    dose = next(f for f in m["files"] if f["kind"] == "RTDOSE")
    dose["frame_of_reference_uid"] = other
    r = qc.frame_of_reference(m)
    assert not r.passed and r.severity == "ERROR"
    assert dose["path"] in r.description and other in r.description
    assert r.metadata["for_by_kind"]["RTDOSE"][dose["sop_instance_uid"]] == other

    m = copy.deepcopy(manifest)
    struct = next(f for f in m["files"] if f["kind"] == "RTSTRUCT")
    struct["info"]["ref_for_uids"] = struct["info"]["roi_for_uids"] = [other]
    r = qc.frame_of_reference(m)
    assert not r.passed and "RTSTRUCT" in r.description and other in r.description

    m = copy.deepcopy(manifest)
    next(f for f in m["files"] if f["kind"] == "CT")["frame_of_reference_uid"] = other
    r = qc.frame_of_reference(m)
    assert not r.passed and "CT slices carry 2 frames of reference" in r.description


# --------------------------------------------------------------------------- 2. CT geometry


def test_ct_geometry_passes_on_the_course(manifest):
    r = qc.ct_geometry(manifest)
    assert r.passed, r.description
    md = r.metadata
    assert md["n_slices"] == 24 and md["slice_spacing_mm"] == pytest.approx(8.0)
    assert md["slice_thickness_mm"] == [8.0] and md["pixel_spacing_mm"] == [[8.0, 8.0]]
    assert md["max_gap_deviation_mm"] == pytest.approx(0.0) and md["missing_slices"] == 0
    _json_roundtrip(r)


def test_ct_geometry_fails_on_a_missing_slice(manifest, tmp_path):
    drop = Path(manifest["drop_root"])
    shutil.copytree(drop, tmp_path / "drop")  # never touch the original files
    m = copy.deepcopy(manifest)
    m["drop_root"] = str(tmp_path / "drop")
    ct = sorted((f for f in m["files"] if f["kind"] == "CT"), key=lambda f: f["path"])
    gone = ct[len(ct) // 2]
    (tmp_path / "drop" / gone["path"]).unlink()
    m["files"] = [f for f in m["files"] if f is not gone]
    r = qc.ct_geometry(m)
    assert not r.passed and r.severity == "ERROR"
    assert "missing slice" in r.description and r.metadata["missing_slices"] == 1
    assert r.metadata["n_slices"] == 23 and r.metadata["max_gap_mm"] == pytest.approx(16.0)


# --------------------------------------------------------------------------- 3. dose units


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
    r = qc.dose_units(course)
    assert r.passed, r.description
    assert r.metadata["prescription_gy"] == pytest.approx(70.0) and r.metadata["dose_type"] == "PHYSICAL"
    assert r.metadata["max_gy"] == pytest.approx(70.0, abs=0.1)
    assert {d["dose_units"] for d in r.metadata["rtdose"]} == {"GY"}
    _json_roundtrip(r)


def test_dose_units_refuses_relative_dose(course, tmp_path):
    r = qc.dose_units(_dose_copy(course, tmp_path, edit_info=lambda i: i.update(unit="RELATIVE")))
    assert not r.passed and r.severity == "ERROR" and "RELATIVE" in r.description


def test_dose_units_checks_the_rtdose_headers(course, tmp_path):
    def relative(m):
        next(f for f in m["files"] if f["kind"] == "RTDOSE")["info"]["dose_units"] = "RELATIVE"

    r = qc.dose_units(_dose_copy(course, tmp_path, edit_manifest=relative))
    assert not r.passed and r.severity == "ERROR" and "DoseUnits RELATIVE" in r.description

    def mixed(m):
        next(f for f in m["files"] if f["kind"] == "RTDOSE")["info"]["dose_type"] = "EFFECTIVE"

    shutil.rmtree(tmp_path / "course")
    r = qc.dose_units(_dose_copy(course, tmp_path, edit_manifest=mixed))
    assert not r.passed and r.severity == "ERROR" and "PHYSICAL and EFFECTIVE" in r.description


def test_dose_units_warns_without_prescription(course, tmp_path):
    r = qc.dose_units(_dose_copy(course, tmp_path, edit_info=lambda i: i.update(prescription_gy=None)))
    assert not r.passed and r.severity == "WARN" and "no prescription" in r.description


def test_dose_units_warns_on_a_per_fraction_looking_dose(course, tmp_path):
    r = qc.dose_units(_dose_copy(course, tmp_path, edit_info=lambda i: i.update(prescription_gy=2000.0)))
    assert not r.passed and r.severity == "WARN" and "x the prescription" in r.description


# --------------------------------------------------------------------------- 4. dose coverage


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
    r = qc.dose_coverage(course / "dose.nii.gz", course / "masks" / "manual")
    assert r.passed, r.description
    table = {row["roi_name"]: row for row in r.metadata["rois"]}
    assert set(table) == {"BODY", "PTV", "PTV_boost", "Lung_L", "Lung_R", "Heart", "Spine", "SpinalCord"}
    assert table["PTV"]["target"] and not table["Heart"]["target"]
    assert all(row["uncovered_pct"] == 0 for row in table.values())
    _json_roundtrip(r)


def test_dose_coverage_errors_when_the_ptv_sticks_out(course, tmp_path):
    dose = _cropped_dose(course, tmp_path, "PTV", axis=0)
    r = qc.dose_coverage(dose, course / "masks" / "manual")
    assert not r.passed and r.severity == "ERROR"
    assert "target PTV:" in r.description
    ptv = next(row for row in r.metadata["rois"] if row["roi_name"] == "PTV")
    assert 20 < ptv["uncovered_pct"] < 80


def test_dose_coverage_warns_for_other_rois(course, tmp_path):
    dose = _cropped_dose(course, tmp_path, "Lung_L", axis=0)
    masks = _subset(course / "masks" / "manual", tmp_path / "masks", ["Lung_L", "Heart"])
    r = qc.dose_coverage(dose, masks)
    assert not r.passed and r.severity == "WARN" and "Lung_L" in r.description and "Heart" not in r.description


# --------------------------------------------------------------------------- 5. structure boundary


def test_structure_boundary_passes_for_rois_inside_the_image(course, tmp_path):
    masks = _subset(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)
    r = qc.structure_boundary(course / "ct.nii.gz", masks)
    assert r.passed, r.description
    assert r.metadata["touching"] == {}
    # BODY reaches both ends of the scan: expected for an EXTERNAL ROI, listed only
    assert r.metadata["touching_expected"]["BODY"] == ["inferior (first slice)", "superior (last slice)"]
    _json_roundtrip(r)


def test_structure_boundary_warns_for_rois_cut_by_the_scan(course):
    r = qc.structure_boundary(course / "ct.nii.gz", course / "masks" / "manual")
    assert not r.passed and r.severity == "WARN"
    assert set(r.metadata["touching"]) == {"Spine", "SpinalCord"}  # infinite cylinders in the phantom
    assert "SpinalCord [inferior (first slice), superior (last slice)]" in r.description


def test_structure_boundary_names_the_in_plane_face(course, tmp_path):
    masks = _subset(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)

    def to_the_edge(arr):
        k = int(np.nonzero(arr.any(axis=(1, 2)))[0].mean())
        j = int(np.nonzero(arr[k].any(axis=1))[0].mean())
        arr[k, j, : arr.shape[2] // 2] = 1  # a band from the heart to column 0

    _edit_mask(masks / "Heart.nii.gz", to_the_edge)
    r = qc.structure_boundary(course / "ct.nii.gz", masks)
    assert not r.passed and r.metadata["touching"] == {"Heart": ["right (first column)"]}  # HFS: +x is left


def test_structure_boundary_reports_rois_cut_by_a_crop(course, tmp_path):
    masks = _subset(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)
    (tmp_path / "crops" / "thorax").mkdir(parents=True)
    bounds = {"region": "thorax", "z_min_mm": 0.0, "z_max_mm": 500.0, "index_range": [12, 24], "clamped": []}
    (tmp_path / "crops" / "thorax" / "bounds.json").write_text(json.dumps(bounds))
    r = qc.structure_boundary(course / "ct.nii.gz", masks, tmp_path / "crops")
    assert not r.passed and r.severity == "WARN"
    cut = r.metadata["cut_by_crop"]["thorax"]
    assert {"Lung_L", "Lung_R", "Heart"} <= set(cut) and "BODY" not in cut
    assert cut["Lung_L"] == ["inferior bound 0.0 mm"]
    assert "crop thorax cuts" in r.description
    # a crop that holds every ROI cuts none
    bounds.update(z_min_mm=-500.0)
    (tmp_path / "crops" / "thorax" / "bounds.json").write_text(json.dumps(bounds))
    assert qc.structure_boundary(course / "ct.nii.gz", masks, tmp_path / "crops").passed


# --------------------------------------------------------------------------- 6. mask vs contour volume


def test_even_odd_area_of_holes_islands_and_crossings():
    def square(c, h):
        return np.array([[c[0] - h, c[1] - h], [c[0] + h, c[1] - h], [c[0] + h, c[1] + h], [c[0] - h, c[1] + h]])

    outer, hole, island = square((0, 0), 10), square((0, 0), 5), square((0, 0), 2)
    assert qc.even_odd_area([outer]) == pytest.approx(400)
    assert qc.even_odd_area([outer, hole]) == pytest.approx(300)
    assert qc.even_odd_area([hole, outer, island]) == pytest.approx(316)
    assert qc.even_odd_area([outer, square((30, 0), 5)]) == pytest.approx(500)
    # two overlapping squares: XOR = both areas minus twice the overlap (a 10 x 20 strip)
    crossing = qc.even_odd_area([outer, square((10, 0), 10)])
    assert crossing == pytest.approx(400 + 400 - 2 * 200, rel=0.01)
    # the rasterizer's even-odd rule agrees on a fine grid
    polys = [outer, square((10, 0), 10)]
    step = 0.05
    grid = fill_polygons([(p + 25) / step - 0.5 for p in polys], (1000, 1000))
    assert grid.sum() * step**2 == pytest.approx(crossing, rel=0.01)


def test_contour_volume_uses_the_contour_dvh_slabs():
    theta = np.linspace(0, 2 * np.pi, 721)[:-1]
    circle = np.column_stack([20 * np.cos(theta), 20 * np.sin(theta)])
    contours = [np.column_stack([circle, np.full(len(circle), z)]) for z in (0.0, 3.0, 6.0, 9.0)]
    # 4 slabs of 3 mm (no end-capping), each pi r^2
    assert qc.contour_volume_cc(contours, 3.0) == pytest.approx(4 * 3 * math.pi * 400 / 1000, rel=1e-4)
    assert qc.contour_volume_cc(contours[:1], 2.5) == pytest.approx(2.5 * math.pi * 400 / 1000, rel=1e-4)


def test_mask_vs_contour_volume_passes_on_resolved_rois(course, rois):
    good = [r for r in rois if r.name in GOOD_ROIS + ("Spine",)]
    r = qc.mask_vs_contour_volume(good, course / "masks" / "manual", 8.0)
    assert r.passed, r.description
    table = {row["roi_name"]: row for row in r.metadata["rois"]}
    assert set(table) == {r.name for r in good}
    assert table["BODY"]["tolerance_pct"] == 2.0 and abs(table["BODY"]["rel_diff_pct"]) < 1.0  # well resolved
    assert table["PTV"]["tolerance_pct"] > 10.0  # 74 voxels, two thirds on the boundary: looser
    assert abs(table["Lung_L"]["rel_diff_pct"]) < 2.0
    _json_roundtrip(r)


def test_mask_vs_contour_volume_warns_on_an_unresolved_cord(course, rois):
    # the phantom's cord is 15 mm wide on 8 mm pixels: its mask is 60 % larger than its contours
    r = qc.mask_vs_contour_volume(rois, course / "masks" / "manual", 8.0)
    assert not r.passed and r.severity == "WARN" and r.description.startswith("SpinalCord:")
    cord = next(row for row in r.metadata["rois"] if row["roi_name"] == "SpinalCord")
    assert cord["boundary_share"] == 1.0 and cord["tolerance_pct"] == 15.0 and cord["rel_diff_pct"] > 50


def test_mask_vs_contour_volume_warns_on_a_damaged_mask(course, rois, tmp_path):
    masks = _subset(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)

    def drop_a_plane(arr):
        k = np.nonzero(arr.any(axis=(1, 2)))[0]
        arr[k[len(k) // 2]] = 0

    _edit_mask(masks / "Lung_L.nii.gz", drop_a_plane)
    r = qc.mask_vs_contour_volume([r for r in rois if r.name in GOOD_ROIS], masks, 8.0)
    assert not r.passed and r.severity == "WARN"
    assert r.description.startswith("Lung_L: mask") and "Lung_R" not in r.description
    lung = next(row for row in r.metadata["rois"] if row["roi_name"] == "Lung_L")
    assert lung["rel_diff_pct"] < -lung["tolerance_pct"] and lung["ok"] is False


def test_mask_vs_contour_volume_warns_on_a_missing_mask(course, rois, tmp_path):
    masks = _subset(course / "masks" / "manual", tmp_path / "masks", ["BODY"])
    r = qc.mask_vs_contour_volume([r for r in rois if r.name in ("BODY", "Heart")], masks, 8.0)
    assert not r.passed and "Heart: contours enclose" in r.description


# --------------------------------------------------------------------------- 7. DVH sanity


def _metrics(**override) -> pd.DataFrame:
    row = dict(
        course_key="c-0",
        roi_name="PTV",
        source="manual",
        method="contour",
        volume_cc=40.0,
        mean_gy=69.0,
        min_gy=60.0,
        max_gy=71.0,
        d2_gy=70.8,
        d50_gy=69.2,
        d95_gy=66.0,
        d98_gy=64.0,
    )
    other = {
        **row,
        "roi_name": "Heart",
        "volume_cc": 60.0,
        "mean_gy": 10.0,
        "min_gy": 1.0,
        "max_gy": 30.0,
        "d2_gy": 28.0,
        "d50_gy": 8.0,
        "d95_gy": 2.0,
        "d98_gy": 1.5,
    }
    return pd.DataFrame([{**row, **override}, other])


def test_dvh_sanity_passes_on_consistent_rows():
    r = qc.dvh_sanity(_metrics())
    assert r.passed and r.metadata == {"n_rows": 2, "n_offending": 0, "offending": []}


def test_dvh_sanity_names_the_offending_rows():
    r = qc.dvh_sanity(_metrics(d98_gy=71.0))
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
        r = qc.dvh_sanity(_metrics(**override))
        assert not r.passed and text in r.metadata["offending"][0]["what"], (override, r.metadata)
        _json_roundtrip(r)


def test_dvh_sanity_fails_on_missing_columns():
    r = qc.dvh_sanity(_metrics().drop(columns=["d98_gy"]))
    assert not r.passed and r.severity == "ERROR" and r.metadata["missing_columns"] == ["d98_gy"]


# --------------------------------------------------------------------------- 8. autoseg completeness


def _totalseg(folder: Path, present: list[str], empty: list[str] = ()) -> Path:
    """TotalSegmentator-like masks on a 10 mm grid (1 cc voxels): 8 voxels per present class."""
    folder.mkdir(parents=True)
    for i, name in enumerate([*present, *empty]):
        arr = np.zeros((12, 6, 6), np.uint8)
        if name in present:
            arr[i % 10 : i % 10 + 2, 1:3, 1:3] = 1
        image = sitk.GetImageFromArray(arr)
        image.SetSpacing((10.0, 10.0, 10.0))
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    return folder


def test_autoseg_completeness_passes_with_the_thoracic_organs(tmp_path):
    folder = _totalseg(
        tmp_path / "ts",
        ["vertebrae_T7", "vertebrae_T8", "heart", "lung_lower_lobe_left", "esophagus", "aorta", "liver"],
        empty=["kidney_left"],
    )
    r = qc.autoseg_completeness(folder)
    assert r.passed, r.description
    assert r.metadata["regions"] == ["thoracic"] and r.metadata["vertebrae"] == ["T7", "T8"]
    assert set(r.metadata["present"]) == {"heart", "lungs", "esophagus", "aorta"} and r.metadata["missing"] == {}
    _json_roundtrip(r)


def test_autoseg_completeness_warns_for_a_missing_heart(tmp_path):
    folder = _totalseg(tmp_path / "ts", ["vertebrae_T7", "lung_upper_lobe_right", "esophagus", "aorta"])
    r = qc.autoseg_completeness(folder)
    assert not r.passed and r.severity == "WARN"
    assert r.metadata["missing"] == {"heart": "no mask file"}
    assert "heart (no mask file; expected at vertebrae_T7)" in r.description


def test_autoseg_completeness_counts_empty_masks_as_missing(tmp_path):
    folder = _totalseg(
        tmp_path / "ts", ["vertebrae_L2", "vertebrae_L1", "liver", "kidney_right"], empty=["kidney_left", "aorta"]
    )
    r = qc.autoseg_completeness(folder)
    assert not r.passed and r.metadata["regions"] == ["lumbar"]
    assert r.metadata["missing"] == {"kidney_left": "empty mask", "aorta": "empty mask"}


def test_autoseg_completeness_needs_a_vertebra(tmp_path):
    folder = _totalseg(tmp_path / "ts", ["heart", "liver"], empty=["vertebrae_T5"])
    r = qc.autoseg_completeness(folder)
    assert not r.passed and r.severity == "WARN" and "cannot infer body region" in r.description
    r = qc.autoseg_completeness(tmp_path / "nothing")
    assert not r.passed and r.severity == "WARN" and "no TotalSegmentator masks" in r.description


# --------------------------------------------------------------------------- 9. radiomics NaN


def _radiomics(n_features: int = 20) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    ids = pd.DataFrame({"course_key": "c-0", "roi_name": ["PTV", "Heart", "Lung_L"], "source": "manual"})
    features = pd.DataFrame(rng.normal(size=(3, n_features)), columns=[f"original_f{i}" for i in range(n_features)])
    return pd.concat([ids, features], axis=1)


def test_radiomics_nan_passes_on_finite_features():
    r = qc.radiomics_nan(_radiomics())
    assert r.passed and r.metadata["n_rows"] == 3 and r.metadata["n_features"] == 20
    _json_roundtrip(r)


def test_radiomics_nan_warns_above_the_threshold():
    frame = _radiomics()
    frame.loc[1, ["original_f0", "original_f1"]] = np.nan  # 10 % of Heart's features
    frame.loc[2, "original_f3"] = np.inf  # 5 % of Lung_L's: at the threshold, listed only
    r = qc.radiomics_nan(frame)
    assert not r.passed and r.severity == "WARN" and r.description == "Heart (manual): 10.0 % of features NaN/inf"
    listed = {row["roi_name"]: row for row in r.metadata["rois_with_nonfinite"]}
    assert listed["Heart"]["features"] == ["original_f0", "original_f1"] and listed["Lung_L"]["n_nonfinite"] == 1
    assert qc.radiomics_nan(frame, max_fraction=0.2).passed


def test_radiomics_nan_counts_only_the_features_of_each_rows_parameter_file():
    """CT and MR rows in one table: the MR-only columns are empty on CT rows, not NaN features."""
    ct = _radiomics()
    mr = ct.assign(source="mr1/manual").rename(columns={f"original_f{i}": f"original_g{i}" for i in range(20)})
    mr.loc[0, "original_g0"] = np.nan  # one real NaN among the MR PTV's 20 features
    frame = pd.concat([ct, mr], ignore_index=True)
    assert not qc.radiomics_nan(frame).passed  # without the feature sets: half of every row is empty
    own = {"manual": [f"original_f{i}" for i in range(20)], "mr1/manual": [f"original_g{i}" for i in range(20)]}
    r = qc.radiomics_nan(frame, features_by_source=own)
    assert r.passed
    (listed,) = r.metadata["rois_with_nonfinite"]
    assert listed["source"] == "mr1/manual" and listed["n_nonfinite"] == 1 and listed["fraction"] == 0.05


def test_radiomics_nan_per_roi_feature_sets_within_one_source():
    """BODY extracted with the light parameters beside CT-parameter ROIs of the same source."""
    frame = _radiomics()
    frame["wavelet_f0"] = [np.nan, 1.0, 2.0]  # computed for Heart and Lung_L only, not for PTV
    full = [f"original_f{i}" for i in range(20)] + ["wavelet_f0"]
    own = {("manual", "PTV"): full[:20], ("manual", "Heart"): full, ("manual", "Lung_L"): full}
    assert qc.radiomics_nan(frame, features_by_source=own).passed
    frame.loc[1, "wavelet_f0"] = np.nan  # a real NaN in Heart's own features
    r = qc.radiomics_nan(frame, features_by_source=own, max_fraction=0.01)
    assert not r.passed and r.description.startswith("Heart (manual)")


# --------------------------------------------------------------------------- guard and document


def test_run_guarded_turns_an_exception_into_a_failed_error(manifest, tmp_path):
    def broken(x):
        raise RuntimeError(f"cannot read {x}")

    r = qc.run_guarded(broken, "dose.nii.gz", name="dose_coverage", asset="dose_grid")
    assert (r.name, r.asset, r.passed, r.severity) == ("dose_coverage", "dose_grid", False, "ERROR")
    assert "RuntimeError: cannot read dose.nii.gz" in r.description and r.metadata["exception"] == "RuntimeError"

    # a real check meeting a file that changed after the manifest: ManifestError, a failed check
    m = copy.deepcopy(manifest)
    m["drop_root"] = str(tmp_path)
    r = qc.run_guarded(qc.ct_geometry, m, name="ct_geometry", asset="ct_image")
    assert not r.passed and r.severity == "ERROR" and "ManifestError" in r.description

    r = qc.run_guarded(lambda: None, name="x", asset="dvh")
    assert not r.passed and "returned NoneType" in r.description
    r = qc.run_guarded(qc.dvh_sanity, _metrics(), name="dvh_checks", asset="dvh")
    assert r.passed and r.name == "dvh_checks"


def test_qc_json_counts_and_round_trips(manifest):
    results = [
        qc.frame_of_reference(manifest),
        qc.dvh_sanity(_metrics(d98_gy=80.0)),
        qc.radiomics_nan(_radiomics().assign(original_f0=np.nan, original_f1=np.nan)),
        qc.QcResult(
            "x",
            "dvh",
            True,
            "WARN",
            "ok",
            {"n": np.int64(3), "v": np.float32(0.5), "nan": float("nan"), "t": (1, 2), "p": Path("a")},
        ),
    ]
    doc = qc.qc_json(results, course_key="c-123")
    assert doc["schema"] == "rtpipeline.qc/1" and doc["course_key"] == "c-123" and doc["status"] == "FAIL"
    assert doc["counts"] == {
        "total": 4,
        "passed": 2,
        "failed": 2,
        "passed_by_severity": {"ERROR": 1, "WARN": 1},
        "failed_by_severity": {"ERROR": 1, "WARN": 1},
    }
    back = json.loads(json.dumps(doc, allow_nan=False))
    assert [qc.from_dict(d) for d in back["results"]] == results
    assert back["results"][3]["metadata"] == {"n": 3, "v": 0.5, "nan": None, "t": [1, 2], "p": "a"}
    assert qc.qc_json(results[2:])["status"] == "WARN" and qc.qc_json([results[0]])["status"] == "PASS"
    with pytest.raises(ValueError, match="severity"):
        qc.QcResult("x", "dvh", True, "INFO", "", {})


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("name", ["hnscc/HNSCC-01-0001", "sts/STS_001"])
def test_real_structures(name, tmp_path):
    """Real CT + RTSTRUCT: one frame of reference, a valid CT, masks that match their contours."""
    copy_shared(name, tmp_path / "drop")
    course = _materialize(tmp_path / "drop", tmp_path / "data", with_dose=False)
    manifest = read_manifest(course)
    assert qc.frame_of_reference(manifest).passed
    geometry = qc.ct_geometry(manifest)
    assert geometry.passed, geometry.description
    uid = primary_structure_set(manifest)
    (struct,) = [f for f in source_files(manifest, "RTSTRUCT") if f["sop_instance_uid"] == uid]
    spacing_z = sitk.ReadImage(str(course / "ct.nii.gz")).GetSpacing()[2]
    r = qc.mask_vs_contour_volume(read_rois(struct["abspath"]), course / "masks" / "manual", spacing_z)
    assert r.passed, r.description
    table = {row["roi_name"]: row for row in r.metadata["rois"]}
    boundary = qc.structure_boundary(course / "ct.nii.gz", course / "masks" / "manual")
    if name.startswith("hnscc"):
        # 64x64 pixels of 7.5 mm, 2.2-2.6 mm slice steps: coarse masks, looser tolerances
        assert geometry.metadata["n_slices"] == 117 and geometry.metadata["max_grid_deviation_mm"] < 0.25
        assert set(table) == {"Cord", "Brainstem", "Rt Parotid", "Lt Parotid"}
        assert all(2 < row["tolerance_pct"] <= 15 and row["ok"] for row in table.values())
        assert boundary.metadata["touching"] == {"Cord": ["inferior (first slice)"]}
    else:
        (gtv,) = table.values()  # 365 cc at 1 mm pixels: within 0.1 %
        assert gtv["tolerance_pct"] == 2.0 and abs(gtv["rel_diff_pct"]) < 0.1
        assert boundary.passed
