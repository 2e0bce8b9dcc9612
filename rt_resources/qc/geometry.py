"""Checks of the planning CT: one frame of reference for every object, and a regular CT series.

* ``frame_of_reference`` (ERROR): the CT slices, every RTSTRUCT (through its referenced frames
  and its ROIs' frames) and every RTDOSE are on the CT's frame of reference, from the manifest.
* ``ct_geometry`` (ERROR): the series' headers, read without pixel data, have one orientation,
  matrix and pixel spacing, slice positions on a uniform grid without gaps, and no gantry tilt.
  The verdict is :func:`rt_resources.imaging.ct_series.validate_ct_series`'s (same tolerances);
  the metadata measures every aspect so that all problems are listed, not only the first.
"""

from __future__ import annotations

import numpy as np

from rt_resources.dicom.sop_classes import Kind
from rt_resources.ingest.manifest import Manifest, ManifestFile
from rt_resources.qc.results import ERROR, WARN, QcResult, join_lines

# --------------------------------------------------------------------------- frame of reference


def frame_of_reference(manifest: Manifest) -> QcResult:
    """CT slices on one frame of reference; every RTSTRUCT and RTDOSE on the CT's (ERROR).

    An RTSTRUCT has no top-level FrameOfReferenceUID: its ReferencedFrameOfReferenceSequence
    must include the CT's and every ROI's ReferencedFrameOfReferenceUID must be the CT's.
    """
    name, asset = "frame_of_reference", "ct_image"
    files = manifest.files
    ct = manifest.of_kind(Kind.CT, series_uid=manifest.ct_series_uid or None)
    problems: list[str] = []
    ct_fors = sorted({f.frame_of_reference_uid for f in ct})
    ct_for = ct_fors[0] if len(ct_fors) == 1 else None
    if not ct:
        problems.append("no CT slices in the manifest")
    elif len(ct_fors) > 1:
        counts = {u: sum(f.frame_of_reference_uid == u for f in ct) for u in ct_fors}
        problems.append(f"CT slices carry {len(ct_fors)} frames of reference: {counts}")
    elif not ct_for:
        problems.append("CT slices carry no FrameOfReferenceUID")
    elif manifest.frame_of_reference_uid and manifest.frame_of_reference_uid != ct_for:
        problems.append(f"manifest frame_of_reference_uid {manifest.frame_of_reference_uid} is not the CT's {ct_for}")

    structs: dict[str, dict] = {}
    for f in manifest.of_kind(Kind.RTSTRUCT):
        ref = list(f.info.get("ref_for_uids") or [])
        roi = list(f.info.get("roi_for_uids") or [])
        structs[f.sop_instance_uid] = {"ref_for_uids": ref, "roi_for_uids": roi}
        if ct_for is None:
            continue
        if not ref and not roi:
            problems.append(f"RTSTRUCT {f.path} references no frame of reference")
        elif ct_for not in ref + roi:
            problems.append(f"RTSTRUCT {f.path} references {sorted(set(ref + roi))}, not the CT's {ct_for}")
        elif set(roi) - {ct_for}:
            problems.append(f"RTSTRUCT {f.path}: ROIs drawn on frame(s) {sorted(set(roi) - {ct_for})}, not the CT's")

    doses: dict[str, str] = {}
    for f in manifest.of_kind(Kind.RTDOSE):
        uid = f.frame_of_reference_uid
        doses[f.sop_instance_uid] = uid
        if ct_for is not None and uid != ct_for:
            problems.append(f"RTDOSE {f.path} is on frame of reference {uid or '(none)'}, not the CT's {ct_for}")

    others = {
        str(kind): sorted({f.frame_of_reference_uid for f in manifest.of_kind(kind)})
        for kind in sorted({f.kind for f in files} - {Kind.CT, Kind.RTSTRUCT, Kind.RTDOSE})
    }
    metadata = {
        "ct_frame_of_reference": ct_for,
        "for_by_kind": {"CT": ct_fors, "RTSTRUCT": structs, "RTDOSE": doses, **others},
        "problems": problems,
    }
    if problems:
        return QcResult(name, asset, False, ERROR, join_lines(problems), metadata)
    return QcResult(
        name,
        asset,
        True,
        ERROR,
        f"CT ({len(ct)} slices), {len(structs)} RTSTRUCT and {len(doses)} RTDOSE on one frame of reference",
        metadata,
    )


# --------------------------------------------------------------------------- CT geometry


def ct_geometry(manifest: Manifest, files: list[ManifestFile] | None = None, validated=None) -> QcResult:
    """The CT series' headers: one orientation, one matrix and pixel spacing, uniform slice
    positions without gaps, no gantry tilt (ERROR). The verdict is the ct_image validation's
    (:func:`rt_resources.imaging.ct_series.validate_ct_series`, same tolerances); the metadata
    measures every aspect, so all problems are listed, not only the first.

    ``files`` (the manifest's CT entries, already sha-checked) and ``validated`` (the
    ``CTGeometry`` or ``CTSeriesError`` the caller got) spare a second hashing and validation
    of the series when the caller has done them."""
    import pydicom

    from rt_resources.imaging.ct_series import (
        ORIENTATION_TOLERANCE,
        SLICE_POSITION_TOLERANCE,
        CTSeriesError,
        validate_ct_series,
    )
    from rt_resources.ingest.manifest import source_files

    name, asset = "ct_geometry", "ct_image"
    if files is None:
        files = source_files(manifest, Kind.CT, manifest.ct_series_uid)
    if not files:
        return QcResult(name, asset, False, ERROR, "no CT slices in the manifest", {"n_slices": 0})
    headers = [(f.abspath, pydicom.dcmread(f.abspath, stop_before_pixels=True)) for f in files]
    problems: list[str] = []
    iops = [_floats(h, "ImageOrientationPatient", 6) for _, h in headers]
    ipps = [_floats(h, "ImagePositionPatient", 3) for _, h in headers]
    spacings = [_floats(h, "PixelSpacing", 2) for _, h in headers]
    bad = [str(p.name) for (p, _), a, b, c in zip(headers, iops, ipps, spacings, strict=True) if None in (a, b, c)]
    if bad:
        problems.append(f"{len(bad)} slice(s) lack orientation, position or pixel spacing: {bad[:5]}")
    orientations = _distinct([tuple(v) for v in iops if v], ORIENTATION_TOLERANCE)
    matrices = sorted({(int(h.get("Rows", 0) or 0), int(h.get("Columns", 0) or 0)) for _, h in headers})
    pixel_spacings = _distinct([tuple(v) for v in spacings if v], 1e-4)
    thicknesses = sorted({round(float(h.get("SliceThickness") or 0), 4) for _, h in headers})
    tilts = sorted({round(float(h.get("GantryDetectorTilt", 0) or 0), 3) for _, h in headers} - {0.0})
    if len(orientations) > 1:
        problems.append(f"{len(orientations)} different ImageOrientationPatient values")
    if len(matrices) > 1:
        problems.append(f"{len(matrices)} different matrices (rows, columns): {matrices}")
    if len(pixel_spacings) > 1:
        problems.append(f"{len(pixel_spacings)} different PixelSpacing values: {pixel_spacings[:4]}")
    if tilts:
        problems.append(f"gantry tilt {tilts} deg")

    positions_mm = {}
    if orientations and not bad:
        row, col = np.asarray(orientations[0][:3]), np.asarray(orientations[0][3:])
        along = np.sort(np.asarray(ipps, float) @ np.cross(row, col))
        positions_mm = _slice_stats(along, SLICE_POSITION_TOLERANCE)
        problems += positions_mm.pop("problems")

    if validated is None:
        try:
            validated = validate_ct_series([p for p, _ in headers])
        except CTSeriesError as exc:
            validated = exc
    if isinstance(validated, CTSeriesError):
        verdict, notes = str(validated), []
    else:
        verdict, notes = None, list(validated.notes)
    if verdict:
        problems.insert(0, verdict)
    metadata = {
        "n_slices": len(headers),
        "matrix_rows_cols": [list(m) for m in matrices],
        "pixel_spacing_mm": [list(s) for s in pixel_spacings],
        "slice_thickness_mm": thicknesses,
        "n_orientations": len(orientations),
        **positions_mm,
        "notes": notes,
        "problems": problems,
    }
    if problems:
        return QcResult(name, asset, False, ERROR, verdict or join_lines(problems), metadata)
    if len(headers) == 1:
        return QcResult(
            name,
            asset,
            False,
            WARN,
            "a single CT slice: masks on the CT grid cannot cover contours on other planes "
            "(contour-based DVHs are unaffected)",
            metadata,
        )
    return QcResult(
        name,
        asset,
        True,
        ERROR,
        f"{len(headers)} slices, {metadata.get('slice_spacing_mm') or 0:.3f} mm apart (max "
        f"{metadata.get('max_grid_deviation_mm', 0):.3f} mm off a uniform grid), one orientation and matrix",
        metadata,
    )


def _floats(header, key: str, n: int) -> list[float] | None:
    """The ``n`` numbers of a multi-valued DICOM attribute, None when absent or malformed."""
    try:
        v = [float(x) for x in header.get(key)]
        return v if len(v) == n else None
    except (TypeError, ValueError):
        return None


def _distinct(values: list[tuple], tol: float) -> list[tuple]:
    out: list[tuple] = []
    for v in values:
        if not any(max(abs(a - b) for a, b in zip(v, u, strict=True)) <= tol for u in out):
            out.append(tuple(round(x, 6) for x in v))
    return out


def _slice_stats(along: np.ndarray, tolerance: float) -> dict:
    """Spacing statistics of sorted slice positions along the normal, and their problems."""
    problems: list[str] = []
    if along.size < 2:
        return {"slice_spacing_mm": None, "max_grid_deviation_mm": 0.0, "problems": problems}
    gaps = np.diff(along)
    median = float(np.median(gaps))
    duplicates = int(np.sum(gaps < 0.01))
    if duplicates:
        problems.append(f"{duplicates} pair(s) of slices at the same position")
    index = np.arange(along.size)
    step, intercept = np.polyfit(index, along, 1)
    deviation = float(np.max(np.abs(along - (intercept + step * index))))
    missing = int(sum(round(g / median) - 1 for g in gaps if median > 0 and g > 1.5 * median))
    if missing:
        problems.append(f"{missing} missing slice(s): largest gap {gaps.max():.3f} mm, typical {median:.3f} mm")
    elif median > 0 and deviation > tolerance * step:
        problems.append(f"uneven slice spacing: slices up to {deviation:.3f} mm off a uniform grid")
    return {
        "slice_spacing_mm": round(float(step), 4),
        "median_gap_mm": round(median, 4),
        "min_gap_mm": round(float(gaps.min()), 4),
        "max_gap_mm": round(float(gaps.max()), 4),
        "max_gap_deviation_mm": round(float(np.max(np.abs(gaps - median))), 4),
        "max_grid_deviation_mm": round(deviation, 4),
        "missing_slices": missing,
        "problems": problems,
    }
