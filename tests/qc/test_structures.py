"""Structure checks: ROIs cut by the image or a crop, mask vs contour volumes (synthetic and real data)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from rt_resources.ingest.manifest import primary_structure_set, read_manifest, source_files
from rt_resources.qc.geometry import ct_geometry, frame_of_reference
from rt_resources.qc.structures import mask_vs_contour_volume, structure_boundary
from rt_resources.structures.rtstruct import read_rois
from tests.helpers import copy_shared
from tests.qc.helpers import GOOD_ROIS, edit_mask, json_roundtrip, materialize_course, subset_masks

# --------------------------------------------------------------------------- structure boundary


def test_structure_boundary_passes_for_rois_inside_the_image(course, tmp_path):
    masks = subset_masks(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)
    r = structure_boundary(course / "ct.nii.gz", masks)
    assert r.passed, r.description
    assert r.metadata["touching"] == {}
    # BODY reaches both ends of the scan: expected for an EXTERNAL ROI, listed only
    assert r.metadata["touching_expected"]["BODY"] == ["inferior (first slice)", "superior (last slice)"]
    json_roundtrip(r)


def test_structure_boundary_warns_for_rois_cut_by_the_scan(course):
    r = structure_boundary(course / "ct.nii.gz", course / "masks" / "manual")
    assert not r.passed and r.severity == "WARN"
    assert set(r.metadata["touching"]) == {"Spine", "SpinalCord"}  # infinite cylinders in the phantom
    assert "SpinalCord [inferior (first slice), superior (last slice)]" in r.description


def test_structure_boundary_names_the_in_plane_face(course, tmp_path):
    masks = subset_masks(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)

    def to_the_edge(arr):
        k = int(np.nonzero(arr.any(axis=(1, 2)))[0].mean())
        j = int(np.nonzero(arr[k].any(axis=1))[0].mean())
        arr[k, j, : arr.shape[2] // 2] = 1  # a band from the heart to column 0

    edit_mask(masks / "Heart.nii.gz", to_the_edge)
    r = structure_boundary(course / "ct.nii.gz", masks)
    assert not r.passed and r.metadata["touching"] == {"Heart": ["right (first column)"]}  # HFS: +x is left


def test_structure_boundary_reports_rois_cut_by_a_crop(course, tmp_path):
    masks = subset_masks(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)
    (tmp_path / "crops" / "thorax").mkdir(parents=True)
    bounds = {"region": "thorax", "z_min_mm": 0.0, "z_max_mm": 500.0, "index_range": [12, 24], "clamped": []}
    (tmp_path / "crops" / "thorax" / "bounds.json").write_text(json.dumps(bounds))
    r = structure_boundary(course / "ct.nii.gz", masks, tmp_path / "crops")
    assert not r.passed and r.severity == "WARN"
    cut = r.metadata["cut_by_crop"]["thorax"]
    assert {"Lung_L", "Lung_R", "Heart"} <= set(cut) and "BODY" not in cut
    assert cut["Lung_L"] == ["inferior bound 0.0 mm"]
    assert "crop thorax cuts" in r.description
    # a crop that holds every ROI cuts none
    bounds.update(z_min_mm=-500.0)
    (tmp_path / "crops" / "thorax" / "bounds.json").write_text(json.dumps(bounds))
    assert structure_boundary(course / "ct.nii.gz", masks, tmp_path / "crops").passed


# --------------------------------------------------------------------------- mask vs contour volume


def test_mask_vs_contour_volume_passes_on_resolved_rois(course, rois):
    good = [r for r in rois if r.name in GOOD_ROIS + ("Spine",)]
    r = mask_vs_contour_volume(good, course / "masks" / "manual", 8.0)
    assert r.passed, r.description
    table = {row["roi_name"]: row for row in r.metadata["rois"]}
    assert set(table) == {r.name for r in good}
    assert table["BODY"]["tolerance_pct"] == 2.0 and abs(table["BODY"]["rel_diff_pct"]) < 1.0  # well resolved
    assert table["PTV"]["tolerance_pct"] > 10.0  # 74 voxels, two thirds on the boundary: looser
    assert abs(table["Lung_L"]["rel_diff_pct"]) < 2.0
    json_roundtrip(r)


def test_mask_vs_contour_volume_warns_on_an_unresolved_cord(course, rois):
    # the phantom's cord is 15 mm wide on 8 mm pixels: its mask is 60 % larger than its contours
    r = mask_vs_contour_volume(rois, course / "masks" / "manual", 8.0)
    assert not r.passed and r.severity == "WARN" and r.description.startswith("SpinalCord:")
    cord = next(row for row in r.metadata["rois"] if row["roi_name"] == "SpinalCord")
    assert cord["boundary_share"] == 1.0 and cord["tolerance_pct"] == 15.0 and cord["rel_diff_pct"] > 50


def test_mask_vs_contour_volume_warns_on_a_damaged_mask(course, rois, tmp_path):
    masks = subset_masks(course / "masks" / "manual", tmp_path / "masks", GOOD_ROIS)

    def drop_a_plane(arr):
        k = np.nonzero(arr.any(axis=(1, 2)))[0]
        arr[k[len(k) // 2]] = 0

    edit_mask(masks / "Lung_L.nii.gz", drop_a_plane)
    r = mask_vs_contour_volume([r for r in rois if r.name in GOOD_ROIS], masks, 8.0)
    assert not r.passed and r.severity == "WARN"
    assert r.description.startswith("Lung_L: mask") and "Lung_R" not in r.description
    lung = next(row for row in r.metadata["rois"] if row["roi_name"] == "Lung_L")
    assert lung["rel_diff_pct"] < -lung["tolerance_pct"] and lung["ok"] is False


def test_mask_vs_contour_volume_warns_on_a_missing_mask(course, rois, tmp_path):
    masks = subset_masks(course / "masks" / "manual", tmp_path / "masks", ["BODY"])
    r = mask_vs_contour_volume([r for r in rois if r.name in ("BODY", "Heart")], masks, 8.0)
    assert not r.passed and "Heart: contours enclose" in r.description


# --------------------------------------------------------------------------- real data


@pytest.mark.parametrize("name", ["hnscc/HNSCC-01-0001", "sts/STS_001"])
def test_real_structures(name, tmp_path):
    """Real CT + RTSTRUCT: one frame of reference, a valid CT, masks that match their contours."""
    copy_shared(name, tmp_path / "drop")
    course = materialize_course(tmp_path / "drop", tmp_path / "data", with_dose=False)
    manifest = read_manifest(course)
    assert frame_of_reference(manifest).passed
    geometry = ct_geometry(manifest)
    assert geometry.passed, geometry.description
    uid = primary_structure_set(manifest)
    (struct,) = [f for f in source_files(manifest, "RTSTRUCT") if f.sop_instance_uid == uid]
    spacing_z = sitk.ReadImage(str(course / "ct.nii.gz")).GetSpacing()[2]
    r = mask_vs_contour_volume(read_rois(struct.abspath), course / "masks" / "manual", spacing_z)
    assert r.passed, r.description
    table = {row["roi_name"]: row for row in r.metadata["rois"]}
    boundary = structure_boundary(course / "ct.nii.gz", course / "masks" / "manual")
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
