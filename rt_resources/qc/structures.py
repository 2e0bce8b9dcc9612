"""Checks of the structure masks: ROIs cut by the image or a crop, and masks vs their contours.

Thresholds and why
------------------
* ``structure_boundary``: any voxel on an image face (or a mask on both sides of a crop bound)
  is a WARN; ROIs of type EXTERNAL/SUPPORT/FIXATION (BODY, couch) are expected at the edges
  and only listed.
* ``mask_vs_contour_volume``: ``max(2 %, 0.15 x boundary share, 1 / sqrt(voxels))``. The
  boundary share is the fraction of the mask's voxels that the contour passes through (an
  in-plane neighbour outside the mask): a well resolved ROI (share <= 0.13, e.g. an organ of
  50 cc or more on 1 mm pixels) gets 2 %; thin or small ROIs, whose voxelization error is inherently
  larger, get more: 0.15 x share covers the error that repeats plane after plane in an
  extruded shape, 1 / sqrt(voxels) the random error of counting voxel centres. Measured
  (|error| / share): synthetic phantom on 8 mm and 2 mm grids <= 0.075, HNSCC-01-0001 at
  7.5 mm pixels <= 0.135 (parotids of 58-70 voxels, none interior), STS_001 GTV (365 cc,
  1 mm pixels) 0.04 % off. A rule by size alone (2 % from 20 cc or 1000 voxels) would flag a
  cord 10 pixels wide (-2.3 % with 6,800 voxels) on every course.

The contour volume is :func:`rt_resources.structures.polygons.contour_volume_cc` (even-odd plane
areas x the contour DVH's slab thicknesses).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from rt_resources.imaging.image_header import image_geometry, read_image_header
from rt_resources.qc.results import WARN, QcResult, join_lines
from rt_resources.structures.masks import mask_index
from rt_resources.structures.polygons import contour_volume_cc

#: ROI types (and names, when the type is unknown) that reach the image edges by nature
EDGE_EXPECTED_TYPES = frozenset({"EXTERNAL", "SUPPORT", "FIXATION"})
EDGE_EXPECTED_NAME = re.compile(r"^(body|external|outline|skin)$|couch|table", re.IGNORECASE)
#: mask vs contour volume: the relative tolerance of well resolved ROIs, and the allowance per
#: unit of boundary share (fraction of mask voxels the contour passes through)
VOLUME_TOL = 0.02
VOLUME_TOL_PER_BOUNDARY = 0.15


def _edge_expected(roi: dict) -> bool:
    return roi["interpreted_type"].upper() in EDGE_EXPECTED_TYPES or bool(EDGE_EXPECTED_NAME.search(roi["roi_name"]))


# --------------------------------------------------------------------------- structure boundary

_PATIENT_AXES = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))  # LPS -, +
_INDEX_EDGES = (("first column", "last column"), ("first row", "last row"), ("first slice", "last slice"))


def _face_names(direction: np.ndarray) -> list[tuple[str, str]]:
    """Per index axis (i, j, k): the (low-index, high-index) face in patient terms."""
    out = []
    for axis in range(3):
        col = direction[:, axis]
        p = int(np.argmax(np.abs(col)))
        neg, pos = _PATIENT_AXES[p]
        lo, hi = (neg, pos) if col[p] > 0 else (pos, neg)
        out.append((f"{lo} ({_INDEX_EDGES[axis][0]})", f"{hi} ({_INDEX_EDGES[axis][1]})"))
    return out


def structure_boundary(ct_path: Path, masks_dir: Path, crops_dir: Path | None = None) -> QcResult:
    """ROIs whose mask touches a face of the image (the structure may be cut by the scan or
    the field of view), and ROIs on both sides of a crop bound in ``crops_dir/<region>/bounds.json``
    (their cropped masks are partial). WARN; BODY/couch-type ROIs are only listed."""
    import SimpleITK as sitk

    from rt_resources.segmentation.crop import crop_axis, slice_z_mm

    name, asset = "structure_boundary", "structure_masks"
    ct = read_image_header(ct_path)
    faces_of = _face_names(image_geometry(ct)[2])
    crops = {}
    if crops_dir is not None and Path(crops_dir).is_dir():
        for bounds_path in sorted(Path(crops_dir).glob("*/bounds.json")):
            crops[bounds_path.parent.name] = json.loads(bounds_path.read_text())
    touching, expected, cut = {}, {}, defaultdict(dict)
    for roi in mask_index(masks_dir):
        mask = sitk.ReadImage(str(roi["path"]))
        arr = sitk.GetArrayViewFromImage(mask)
        if not arr.any():
            continue
        faces = []
        for axis in range(3):  # SimpleITK axis i, j, k = numpy axis 2, 1, 0
            np_axis = 2 - axis
            first = np.take(arr, 0, axis=np_axis).any()
            last = np.take(arr, arr.shape[np_axis] - 1, axis=np_axis).any()
            faces += [f for f, hit in zip(faces_of[axis], (first, last), strict=True) if hit]
        if faces:
            (expected if _edge_expected(roi) else touching)[roi["roi_name"]] = faces
        if crops and not _edge_expected(roi):
            axis = crop_axis(mask)
            occupied = np.nonzero(arr.any(axis=tuple(a for a in range(3) if a != 2 - axis)))[0]
            z = slice_z_mm(mask)[occupied]
            for region, b in crops.items():
                lo, hi = float(b["z_min_mm"]) - 2e-3, float(b["z_max_mm"]) + 2e-3
                inside = (z >= lo) & (z <= hi)
                if inside.any() and not inside.all():
                    sides = ([f"inferior bound {b['z_min_mm']} mm"] if (z < lo).any() else []) + (
                        [f"superior bound {b['z_max_mm']} mm"] if (z > hi).any() else []
                    )
                    cut[region][roi["roi_name"]] = sides
    metadata = {
        "touching": touching,
        "touching_expected": expected,
        "crops": {r: {"z_min_mm": b["z_min_mm"], "z_max_mm": b["z_max_mm"]} for r, b in crops.items()},
        "cut_by_crop": dict(cut),
    }
    lines = []
    if touching:
        lines.append("ROIs at the image edge (may be cut): " + _roi_faces(touching))
    for region, rois in cut.items():
        lines.append(f"crop {region} cuts " + _roi_faces(rois))
    if lines:
        return QcResult(name, asset, False, WARN, join_lines(lines), metadata)
    what = f" and inside every crop ({', '.join(crops)})" if crops else ""
    return QcResult(name, asset, True, WARN, f"no ROI touches the image edges{what}", metadata)


def _roi_faces(items: dict[str, list[str]], n: int = 8) -> str:
    shown = [f"{roi} [{', '.join(f)}]" for roi, f in list(items.items())[:n]]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return "; ".join(shown) + more


# --------------------------------------------------------------------------- mask vs contour volume


def volume_tolerance(voxels: int, boundary_share: float) -> float:
    """Relative tolerance of mask vs contour volume: ``max(2 %, 0.15 x boundary_share,
    1 / sqrt(voxels))`` (see the module docstring)."""
    return max(VOLUME_TOL, VOLUME_TOL_PER_BOUNDARY * boundary_share, 1.0 / math.sqrt(max(voxels, 1)))


def boundary_share(mask: np.ndarray) -> float:
    """Fraction of a ``(z, y, x)`` mask's voxels with an in-plane 4-neighbour outside it (or on
    the image edge): the voxels the contour passes through."""
    a = np.asarray(mask, bool)
    n = int(np.count_nonzero(a))
    if n == 0:
        return 0.0
    interior = a.copy()
    interior[:, 1:, :] &= a[:, :-1, :]
    interior[:, :-1, :] &= a[:, 1:, :]
    interior[:, :, 1:] &= a[:, :, :-1]
    interior[:, :, :-1] &= a[:, :, 1:]
    interior[:, [0, -1], :] = False
    interior[:, :, [0, -1]] = False
    return 1.0 - int(np.count_nonzero(interior)) / n


def mask_vs_contour_volume(rois: list, masks_dir: Path, ct_spacing_z: float) -> QcResult:
    """For every manual ROI with contours: volume enclosed by its contours (even-odd plane areas
    x slab thicknesses, the contour DVH's convention) vs its mask (voxels x voxel volume).
    WARN when they differ by more than :func:`volume_tolerance` (2 % for well resolved ROIs): the
    mask-based DVH and radiomics of that ROI describe a different volume than the contours."""
    import SimpleITK as sitk

    from rt_resources.structures.names import sanitize_roi_names

    name, asset = "mask_vs_contour_volume", "structure_masks"
    masks_dir = Path(masks_dir)
    files = {r["roi_name"]: r["path"] for r in mask_index(masks_dir)}
    stems = sanitize_roi_names([r.name for r in rois])
    table, violations = [], []
    for roi in rois:
        if roi.empty:
            continue
        row: dict[str, Any] = {
            "roi_name": roi.name,
            "contour_cc": None,
            "mask_cc": None,
            "voxels": 0,
            "rel_diff_pct": None,
            "tolerance_pct": None,
            "ok": None,
            "note": "",
        }
        table.append(row)
        try:
            contour_cc = contour_volume_cc(roi.contours, ct_spacing_z)
        except ValueError as exc:
            row["note"] = f"not compared: {exc}"
            continue
        row["contour_cc"] = round(contour_cc, 4)
        path = files.get(roi.name) or masks_dir / f"{stems[roi.name]}.nii.gz"
        if not Path(path).is_file():
            row.update(ok=False, note="no mask file")
            violations.append(f"{roi.name}: contours enclose {contour_cc:.2f} cc but there is no mask")
            continue
        mask = sitk.ReadImage(str(path))
        arr = sitk.GetArrayViewFromImage(mask)
        voxels = int(np.count_nonzero(arr))
        mask_cc = voxels * float(np.prod(mask.GetSpacing())) / 1000.0
        share = boundary_share(arr)
        tol = volume_tolerance(voxels, share)
        rel = (mask_cc - contour_cc) / contour_cc if contour_cc > 0 else (0.0 if voxels == 0 else math.inf)
        ok = abs(rel) <= tol
        row.update(
            mask_cc=round(mask_cc, 4),
            voxels=voxels,
            rel_diff_pct=round(100 * rel, 3),
            boundary_share=round(share, 3),
            tolerance_pct=round(100 * tol, 2),
            ok=ok,
        )
        if not ok:
            violations.append(
                f"{roi.name}: mask {mask_cc:.2f} cc vs contours {contour_cc:.2f} cc ({100 * rel:+.1f} %, "
                f"tolerance {100 * tol:.1f} %)"
            )
    metadata = {
        "tolerance": f"max({100 * VOLUME_TOL:g} %, {VOLUME_TOL_PER_BOUNDARY:g} x boundary share, 1 / sqrt(voxels)); "
        "boundary share: fraction of mask voxels with an in-plane neighbour outside the mask",
        "single_plane_mm": ct_spacing_z,
        "rois": table,
    }
    if violations:
        return QcResult(name, asset, False, WARN, join_lines(violations, n=6), metadata)
    compared = sum(r["ok"] is not None for r in table)
    return QcResult(name, asset, True, WARN, f"{compared} ROI masks match their contour volumes", metadata)
