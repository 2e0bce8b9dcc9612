"""Quality checks of one course: plain functions over the course folder's files.

Each check takes paths, a manifest dict or a table (never a Dagster context) and returns one
:class:`QcResult`: which asset it belongs to, whether it passed, how bad a failure is
(``ERROR``: a downstream number would be wrong; ``WARN``: look at it), one or two lines a
physicist can act on, and JSON-serializable metadata (per-ROI tables as lists of dicts).
:func:`run_guarded` turns a check that raises into a failed ``ERROR`` result (a check that
could not run never passes) and :func:`qc_json` is the ``courses/<key>/qc.json`` document.

Thresholds and why
------------------
* ``dose_coverage``: a voxel is uncovered when its centre lies more than half a dose voxel
  outside the dose grid (where :class:`rt_resources.dvh.sampling.DoseSampler` returns 0 Gy).
  Targets (name or type PTV/CTV/GTV/ITV) fail with ERROR above 0.5 % uncovered (their D98/D95
  read from 0 Gy samples); other ROIs WARN above 1 % (BODY often extends beyond the grid).
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
* ``dvh_sanity``: orderings hold to 1e-6 Gy (the metric code clamps D_x to [min, max]).
* ``radiomics_nan``: WARN when more than 5 % of an ROI's features are NaN or infinite.
* ``autoseg_completeness``: see :data:`EXPECTED_ORGANS`.
"""

from __future__ import annotations

import json
import math
import re
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

QC_SCHEMA = "rtpipeline.qc/1"
ERROR = "ERROR"
WARN = "WARN"
SEVERITIES = (ERROR, WARN)

#: ROI names (case-insensitive, anywhere in the name) and RTROIInterpretedTypes that are targets
TARGET_NAME = re.compile(r"PTV|CTV|GTV|ITV", re.IGNORECASE)
TARGET_TYPES = frozenset({"PTV", "CTV", "GTV"})
#: uncovered fraction of a target above which its dose metrics are wrong (ERROR)
TARGET_UNCOVERED_MAX = 0.005
#: uncovered fraction of any other ROI above which the check warns
OTHER_UNCOVERED_MAX = 0.01
#: ROI types (and names, when the type is unknown) that reach the image edges by nature
EDGE_EXPECTED_TYPES = frozenset({"EXTERNAL", "SUPPORT", "FIXATION"})
EDGE_EXPECTED_NAME = re.compile(r"^(body|external|outline|skin)$|couch|table", re.IGNORECASE)
#: mask vs contour volume: the relative tolerance of well resolved ROIs, and the allowance per
#: unit of boundary share (fraction of mask voxels the contour passes through)
VOLUME_TOL = 0.02
VOLUME_TOL_PER_BOUNDARY = 0.15
#: radiomics: largest fraction of non-finite features of one ROI before the check warns
RADIOMICS_MAX_NONFINITE = 0.05
#: a vertebra mask counts as a level the scan covers from this volume (TotalSegmentator's
#: false positives are small blobs; a vertebral body is 10-40 cc)
MIN_VERTEBRA_CC = 1.0
DVH_TOLERANCE_GY = 1e-6

_PLANE_DECIMALS = 3  # contour planes grouped by z rounded to 1 um, as the contour DVH does
_NON_AXIAL_MM = 0.01


@dataclass(frozen=True)
class QcResult:
    """One check's verdict on one course."""

    name: str  #: stable id, e.g. "frame_of_reference"
    asset: str  #: the asset it belongs to: "ct_image", "dose_grid", "structure_masks", ...
    passed: bool
    severity: str  #: ERROR (blocking: a downstream number would be wrong) or WARN
    description: str  #: one or two lines a physicist can act on
    metadata: dict = field(default_factory=dict)  #: JSON-serializable

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        object.__setattr__(self, "passed", bool(self.passed))
        object.__setattr__(self, "metadata", _jsonable(dict(self.metadata)))


def to_dict(result: QcResult) -> dict:
    """The result as a plain dict (as in qc.json)."""
    return asdict(result)


def from_dict(data: dict) -> QcResult:
    """A result from :func:`to_dict`'s dict (unknown keys are ignored)."""
    return QcResult(
        name=str(data["name"]),
        asset=str(data["asset"]),
        passed=bool(data["passed"]),
        severity=str(data["severity"]),
        description=str(data.get("description", "")),
        metadata=dict(data.get("metadata") or {}),
    )


def qc_json(results: list[QcResult], course_key: str | None = None) -> dict:
    """The ``qc.json`` document: schema, overall status, counts by severity, every result.

    ``status`` is FAIL when an ERROR check failed, WARN when only WARN checks failed, else PASS.
    """
    counts = {
        "total": len(results),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "passed_by_severity": {s: sum(r.passed and r.severity == s for r in results) for s in SEVERITIES},
        "failed_by_severity": {s: sum(not r.passed and r.severity == s for r in results) for s in SEVERITIES},
    }
    if counts["failed_by_severity"][ERROR]:
        status = "FAIL"
    elif counts["failed_by_severity"][WARN]:
        status = "WARN"
    else:
        status = "PASS"
    doc: dict[str, Any] = {"schema": QC_SCHEMA}
    if course_key is not None:
        doc["course_key"] = course_key
    doc.update(status=status, counts=counts, results=[to_dict(r) for r in results])
    return doc


def run_guarded(fn: Callable[..., QcResult], *args, name: str, asset: str, **kwargs) -> QcResult:
    """``fn(*args, **kwargs)``; any exception becomes a failed ERROR result naming it.

    The result carries ``name`` and ``asset`` (so it always matches the caller's check spec);
    a check that returns something other than a :class:`QcResult` fails too.
    """
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- a QC check that errors is a failed check, never a pass
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        return QcResult(
            name,
            asset,
            False,
            ERROR,
            f"check {name} could not run: {type(exc).__name__}: {exc}",
            {"exception": type(exc).__name__, "message": str(exc)[:2000], "where": where},
        )
    if not isinstance(result, QcResult):
        return QcResult(name, asset, False, ERROR, f"check {name} returned {type(result).__name__}, not a QcResult", {})
    if (result.name, result.asset) != (name, asset):
        result = replace(result, name=name, asset=asset)
    return result


# --------------------------------------------------------------------------- 1. frame of reference


def frame_of_reference(manifest: dict) -> QcResult:
    """CT slices on one frame of reference; every RTSTRUCT and RTDOSE on the CT's (ERROR).

    An RTSTRUCT has no top-level FrameOfReferenceUID: its ReferencedFrameOfReferenceSequence
    must include the CT's and every ROI's ReferencedFrameOfReferenceUID must be the CT's.
    """
    name, asset = "frame_of_reference", "ct_image"
    files = manifest.get("files", [])
    ct_series = manifest.get("ct_series_uid")
    ct = [f for f in files if f["kind"] == "CT" and (not ct_series or f.get("series_uid") == ct_series)]
    problems: list[str] = []
    if any("frame_of_reference_uid" not in f for f in files if f["kind"] in ("CT", "RTDOSE")):
        problems.append(
            "the manifest has no per-file frame_of_reference_uid (written by an older course_manifest): "
            "re-materialize course_manifest"
        )
    ct_fors = sorted({f.get("frame_of_reference_uid", "") for f in ct})
    ct_for = ct_fors[0] if len(ct_fors) == 1 else None
    if not ct:
        problems.append("no CT slices in the manifest")
    elif len(ct_fors) > 1:
        counts = {u: sum(f.get("frame_of_reference_uid", "") == u for f in ct) for u in ct_fors}
        problems.append(f"CT slices carry {len(ct_fors)} frames of reference: {counts}")
    elif not ct_for:
        problems.append("CT slices carry no FrameOfReferenceUID")
    elif manifest.get("frame_of_reference_uid") and manifest["frame_of_reference_uid"] != ct_for:
        problems.append(
            f"manifest frame_of_reference_uid {manifest['frame_of_reference_uid']} is not the CT's {ct_for}"
        )

    structs: dict[str, dict] = {}
    for f in files:
        if f["kind"] != "RTSTRUCT":
            continue
        info = f.get("info", {})
        ref = list(info.get("ref_for_uids") or [])
        roi = list(info.get("roi_for_uids") or [])
        structs[f["sop_instance_uid"]] = {"ref_for_uids": ref, "roi_for_uids": roi}
        if ct_for is None:
            continue
        if not ref and not roi:
            problems.append(f"RTSTRUCT {f['path']} references no frame of reference")
        elif ct_for not in ref + roi:
            problems.append(f"RTSTRUCT {f['path']} references {sorted(set(ref + roi))}, not the CT's {ct_for}")
        elif set(roi) - {ct_for}:
            problems.append(f"RTSTRUCT {f['path']}: ROIs drawn on frame(s) {sorted(set(roi) - {ct_for})}, not the CT's")

    doses: dict[str, str] = {}
    for f in files:
        if f["kind"] != "RTDOSE":
            continue
        uid = f.get("frame_of_reference_uid", "")
        doses[f["sop_instance_uid"]] = uid
        if ct_for is not None and uid != ct_for:
            problems.append(f"RTDOSE {f['path']} is on frame of reference {uid or '(none)'}, not the CT's {ct_for}")

    others = {
        kind: sorted({f.get("frame_of_reference_uid", "") for f in files if f["kind"] == kind})
        for kind in sorted({f["kind"] for f in files} - {"CT", "RTSTRUCT", "RTDOSE"})
    }
    metadata = {
        "ct_frame_of_reference": ct_for,
        "for_by_kind": {"CT": ct_fors, "RTSTRUCT": structs, "RTDOSE": doses, **others},
        "problems": problems,
    }
    if problems:
        return QcResult(name, asset, False, ERROR, _join(problems), metadata)
    return QcResult(
        name,
        asset,
        True,
        ERROR,
        f"CT ({len(ct)} slices), {len(structs)} RTSTRUCT and {len(doses)} RTDOSE on one frame of reference",
        metadata,
    )


# --------------------------------------------------------------------------- 2. CT geometry


def ct_geometry(manifest: dict, files: list[dict] | None = None, validated=None) -> QcResult:
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
        files = source_files(manifest, "CT", manifest.get("ct_series_uid"))
    if not files:
        return QcResult(name, asset, False, ERROR, "no CT slices in the manifest", {"n_slices": 0})
    headers = [(f["abspath"], pydicom.dcmread(f["abspath"], stop_before_pixels=True)) for f in files]
    problems: list[str] = []

    def floats(h, key, n):
        try:
            v = [float(x) for x in h.get(key)]
            return v if len(v) == n else None
        except (TypeError, ValueError):
            return None

    iops = [floats(h, "ImageOrientationPatient", 6) for _, h in headers]
    ipps = [floats(h, "ImagePositionPatient", 3) for _, h in headers]
    spacings = [floats(h, "PixelSpacing", 2) for _, h in headers]
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
        return QcResult(name, asset, False, ERROR, verdict or _join(problems), metadata)
    if len(headers) == 1:
        return QcResult(
            name, asset, False, WARN,
            "a single CT slice: masks on the CT grid cannot cover contours on other planes "
            "(contour-based DVHs are unaffected)", metadata,
        )  # fmt: skip
    return QcResult(
        name,
        asset,
        True,
        ERROR,
        f"{len(headers)} slices, {metadata.get('slice_spacing_mm') or 0:.3f} mm apart (max "
        f"{metadata.get('max_grid_deviation_mm', 0):.3f} mm off a uniform grid), one orientation and matrix",
        metadata,
    )


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


# --------------------------------------------------------------------------- 3. dose units


def dose_units(course_dir: Path) -> QcResult:
    """dose.json in Gy; every RTDOSE summed into it in GY with DoseType PHYSICAL or EFFECTIVE
    (one type, not mixed; from the manifest's RTDOSE headers) (ERROR); a prescription known and
    the dose maximum within 0.8-2.0 x of it (WARN: absolute DVH metrics are still right)."""
    from rt_resources.dose.course import DOSE_FILE, read_dose_info

    name, asset = "dose_units", "dose_grid"
    course_dir = Path(course_dir)
    info = read_dose_info(course_dir)
    errors: list[str] = []
    warnings: list[str] = []
    unit = str(info.get("unit", info.get("units", "")) or "")
    if unit.upper() != "GY":
        errors.append(f"dose.json unit is {unit or 'missing'!r}, not Gy: the dose cannot be reported in Gy")
    used = [c for c in info.get("components", []) if c.get("used")]
    if not used:
        why = [f"RTDOSE {c.get('sop_instance_uid', '?')}: {c.get('why', '')}" for c in info.get("components", [])]
        errors.append("no RTDOSE could be used for the total" + (": " + "; ".join(why) if why else ""))
    manifest_path = course_dir / "manifest.json"
    headers: dict[str, dict] = {}
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        headers = {f["sop_instance_uid"]: f.get("info", {}) for f in manifest.get("files", []) if f["kind"] == "RTDOSE"}
    else:
        warnings.append("no manifest.json beside dose.json: RTDOSE units and types not verified")
    table = []
    for c in used:
        uid = c.get("sop_instance_uid", "")
        h = headers.get(uid)
        row = {
            "sop_instance_uid": uid,
            "dose_units": None,
            "dose_type": None,
            "summation_type": c.get("summation_type"),
        }
        if h is None:
            if headers:
                errors.append(f"RTDOSE {uid} used for the total is not in the manifest")
        else:
            row.update(dose_units=str(h.get("dose_units", "")).upper(), dose_type=str(h.get("dose_type", "")).upper())
            if row["dose_units"] != "GY":
                errors.append(f"RTDOSE {uid}: DoseUnits {row['dose_units'] or 'missing'}, not GY")
            if row["dose_type"] == "ERROR":
                errors.append(f"RTDOSE {uid}: DoseType ERROR (an uncertainty grid, not a dose)")
            elif row["dose_type"] not in ("PHYSICAL", "EFFECTIVE"):
                warnings.append(f"RTDOSE {uid}: DoseType {row['dose_type'] or 'missing'}; assumed PHYSICAL")
        table.append(row)
    types = sorted({r["dose_type"] for r in table if r["dose_type"] in ("PHYSICAL", "EFFECTIVE")})
    if len(types) > 1:
        errors.append("PHYSICAL and EFFECTIVE (RBE-weighted) doses summed into one total")
    rx = info.get("prescription_gy")
    max_gy = None
    if rx is None or not (isinstance(rx, int | float) and rx > 0):
        warnings.append("no prescription found: DVH metrics relative to the prescription (V95%, V100%) are missing")
    elif (course_dir / DOSE_FILE).exists():
        max_gy = _image_max(course_dir / DOSE_FILE)
        if not 0.8 <= max_gy / rx <= 2.0:
            warnings.append(
                f"dose maximum {max_gy:.2f} Gy is {max_gy / rx:.2f} x the prescription {rx:.2f} Gy "
                "(expected 0.8-2.0): a per-fraction dose or a scaling problem?"
            )
    metadata = {
        "unit": unit,
        "dose_type": types[0] if len(types) == 1 else types,
        "prescription_gy": rx,
        "max_gy": max_gy,
        "decision": info.get("decision", ""),
        "rtdose": table,
        "errors": errors,
        "warnings": warnings,
    }
    if errors:
        return QcResult(name, asset, False, ERROR, _join(errors + warnings), metadata)
    if warnings:
        return QcResult(name, asset, False, WARN, _join(warnings), metadata)
    return QcResult(
        name,
        asset,
        True,
        ERROR,
        f"dose in Gy ({'/'.join(types) or 'PHYSICAL'}) from {len(used)} RTDOSE; prescription {rx:g} Gy",
        metadata,
    )


def _image_max(path: Path) -> float:
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))  # kept alive: a view of a temporary image dangles
    return float(np.max(sitk.GetArrayViewFromImage(image)))


# --------------------------------------------------------------------------- masks helpers


def mask_index(masks_dir: Path) -> list[dict]:
    """``{"roi_name", "file", "path", "interpreted_type"}`` of every mask in a ``masks/<source>/`` folder.

    Names and types come from ``rois.json`` when present; other ``*.nii.gz`` files are
    named by their stem.
    """
    masks_dir = Path(masks_dir)
    out: list[dict] = []
    listed = set()
    index = masks_dir / "rois.json"
    if index.is_file():
        for r in json.loads(index.read_text()):
            if r.get("file") and (masks_dir / r["file"]).is_file():
                listed.add(r["file"])
                out.append(
                    {
                        "roi_name": str(r["roi_name"]),
                        "file": r["file"],
                        "path": masks_dir / r["file"],
                        "interpreted_type": str(r.get("interpreted_type", "") or ""),
                    }
                )
    for p in sorted(masks_dir.glob("*.nii.gz")):
        if p.name not in listed:
            out.append({"roi_name": p.name[: -len(".nii.gz")], "file": p.name, "path": p, "interpreted_type": ""})
    return out


def is_target(roi_name: str, interpreted_type: str = "") -> bool:
    """A planning target: PTV/CTV/GTV/ITV in the name, or a PTV/CTV/GTV interpreted type."""
    return bool(TARGET_NAME.search(roi_name)) or interpreted_type.upper() in TARGET_TYPES


def _edge_expected(roi: dict) -> bool:
    return roi["interpreted_type"].upper() in EDGE_EXPECTED_TYPES or bool(EDGE_EXPECTED_NAME.search(roi["roi_name"]))


def _geometry(image) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(origin, spacing, direction 3x3, size)`` of a SimpleITK image or image reader."""
    return (
        np.asarray(image.GetOrigin(), float),
        np.asarray(image.GetSpacing(), float),
        np.asarray(image.GetDirection(), float).reshape(3, 3),
        np.asarray(image.GetSize(), float),
    )


def _read_header(path: Path):
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


# --------------------------------------------------------------------------- 4. dose coverage


def dose_coverage(dose_path: Path, masks_dir: Path) -> QcResult:
    """Per ROI mask, the fraction of voxels whose centre lies outside the dose grid (more than
    half a dose voxel beyond its outer voxel centres, where the DVH reads 0 Gy). ERROR when a
    target has more than 0.5 % uncovered, WARN when another ROI has more than 1 %."""
    import SimpleITK as sitk

    name, asset = "dose_coverage", "dose_grid"
    d_origin, d_spacing, d_dir, d_size = _geometry(_read_header(dose_path))
    table, errors, warnings = [], [], []
    for roi in mask_index(masks_dir):
        mask = sitk.ReadImage(str(roi["path"]))
        arr = sitk.GetArrayViewFromImage(mask)
        m_origin, m_spacing, m_dir, _ = _geometry(mask)
        # mask (i, j, k) -> dose continuous (i, j, k): one affine map
        a = (d_dir.T @ m_dir * m_spacing) / d_spacing[:, None]
        b = d_dir.T @ (m_origin - d_origin) / d_spacing
        n = outside = 0
        for k in range(arr.shape[0]):  # slice by slice: memory stays one slice of points
            jj, ii = np.nonzero(arr[k])
            if ii.size == 0:
                continue
            idx = np.column_stack([ii, jj, np.full(ii.size, k)]).astype(float) @ a.T + b
            inside = np.all((idx >= -0.5) & (idx <= d_size - 0.5), axis=1)
            n += ii.size
            outside += int(ii.size - np.count_nonzero(inside))
        target = is_target(roi["roi_name"], roi["interpreted_type"])
        frac = outside / n if n else None
        table.append(
            {
                "roi_name": roi["roi_name"],
                "target": target,
                "voxels": n,
                "uncovered_voxels": outside,
                "uncovered_pct": None if frac is None else round(100 * frac, 3),
            }
        )
        if frac is None:
            continue
        if target and frac > TARGET_UNCOVERED_MAX:
            errors.append(f"target {roi['roi_name']}: {100 * frac:.2f} % of its voxels outside the dose grid")
        elif not target and frac > OTHER_UNCOVERED_MAX:
            warnings.append(f"{roi['roi_name']}: {100 * frac:.2f} % outside the dose grid")
    extent_lo = d_origin + d_dir @ (-0.5 * d_spacing)
    metadata = {
        "dose_grid": {
            "size": d_size.astype(int).tolist(),
            "spacing_mm": d_spacing.round(4).tolist(),
            "origin_mm": d_origin.round(3).tolist(),
            "corner_mm": extent_lo.round(3).tolist(),
        },
        "thresholds_pct": {"target": 100 * TARGET_UNCOVERED_MAX, "other": 100 * OTHER_UNCOVERED_MAX},
        "rois": table,
    }
    if errors:
        return QcResult(name, asset, False, ERROR, _join(errors + warnings), metadata)
    if warnings:
        return QcResult(
            name, asset, False, WARN, _join(warnings) + " (metrics of these ROIs count 0 Gy there)", metadata
        )
    return QcResult(name, asset, True, ERROR, f"all {len(table)} ROI masks inside the dose grid", metadata)


# --------------------------------------------------------------------------- 5. structure boundary

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
    ct = _read_header(ct_path)
    faces_of = _face_names(_geometry(ct)[2])
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
        return QcResult(name, asset, False, WARN, _join(lines), metadata)
    what = f" and inside every crop ({', '.join(crops)})" if crops else ""
    return QcResult(name, asset, True, WARN, f"no ROI touches the image edges{what}", metadata)


def _roi_faces(items: dict[str, list[str]], n: int = 8) -> str:
    shown = [f"{roi} [{', '.join(f)}]" for roi, f in list(items.items())[:n]]
    more = f" and {len(items) - n} more" if len(items) > n else ""
    return "; ".join(shown) + more


# --------------------------------------------------------------------------- 6. mask vs contour volume


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


def contour_volume_cc(contours: list[np.ndarray], single_plane_mm: float) -> float:
    """Volume (cc) enclosed by axial contours: each plane's even-odd area times its slab
    thickness (:func:`rt_resources.dvh.sampling.plane_thicknesses`, the contour DVH's convention)."""
    from rt_resources.dvh.sampling import plane_thicknesses

    planes: dict[float, list[np.ndarray]] = defaultdict(list)
    for c in contours:
        if np.ptp(c[:, 2]) > _NON_AXIAL_MM:
            raise ValueError("contour is not axial (z varies)")
        planes[round(float(c[0, 2]), _PLANE_DECIMALS)].append(np.asarray(c[:, :2], float))
    if not planes:
        return 0.0
    zs = np.array(sorted(planes))
    thickness = plane_thicknesses(zs, single_plane_mm)
    return float(sum(even_odd_area(planes[z]) * t for z, t in zip(zs, thickness, strict=True))) / 1000.0


def even_odd_area(polygons: list[np.ndarray]) -> float:
    """Area (mm^2) inside an odd number of ``polygons`` (the masks' even-odd rule).

    Exact for disjoint and nested polygons (an inner contour is a hole, a contour inside a
    hole an island): each polygon's area counts with the sign of its nesting depth. Polygons
    that cross or touch (or whose bounding boxes overlap without nesting) fall back to a fine
    scan-line fill of the plane (about 250,000 cells).
    """
    areas = [abs(_shoelace(p)) for p in polygons]
    if len(polygons) == 1:
        return areas[0]
    lo = np.array([p.min(axis=0) for p in polygons])
    hi = np.array([p.max(axis=0) for p in polygons])
    depth = np.zeros(len(polygons), int)
    for a in range(len(polygons)):
        for b in range(len(polygons)):
            if a == b or np.any(hi[b] < lo[a]) or np.any(lo[b] > hi[a]):
                continue  # disjoint boxes
            inside = _points_in_polygon(polygons[b], polygons[a])
            if inside.all():
                depth[b] += 1
            elif not _points_in_polygon(polygons[a], polygons[b]).all():
                return _raster_area(polygons)  # overlapping, not nested
    return float(sum(area * (-1) ** d for area, d in zip(areas, depth, strict=True)))


def _shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _points_in_polygon(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon for many points (ray to +x)."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    x0, y0 = poly[:, 0][None, :], poly[:, 1][None, :]
    x1, y1 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    crosses = (y0 <= y) != (y1 <= y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (np.sum(crosses & (x < xc), axis=1) % 2).astype(bool)


def _raster_area(polygons: list[np.ndarray], cells: int = 250_000) -> float:
    from rt_resources.structures.rasterize import fill_polygons

    lo = np.min([p.min(axis=0) for p in polygons], axis=0)
    hi = np.max([p.max(axis=0) for p in polygons], axis=0)
    step = max(math.sqrt(float(np.prod(np.maximum(hi - lo, 1e-3))) / cells), 1e-3)
    nx, ny = (np.ceil((hi - lo) / step).astype(int) + 2).tolist()
    inside = fill_polygons([(p - lo) / step - 0.5 for p in polygons], (ny, nx))
    return float(np.count_nonzero(inside)) * step * step


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
        return QcResult(name, asset, False, WARN, _join(violations, n=6), metadata)
    compared = sum(r["ok"] is not None for r in table)
    return QcResult(name, asset, True, WARN, f"{compared} ROI masks match their contour volumes", metadata)


# --------------------------------------------------------------------------- 7. DVH sanity

DVH_COLUMNS = ("volume_cc", "mean_gy", "min_gy", "max_gy", "d2_gy", "d50_gy", "d98_gy")


def dvh_sanity(metrics) -> QcResult:
    """Every DVH row: volume > 0, max >= D2 >= D50 (>= D95) >= D98 >= min, min <= mean <= max,
    no NaN in these columns (ERROR)."""
    name, asset = "dvh_sanity", "dvh"
    missing = [c for c in DVH_COLUMNS if c not in metrics.columns]
    if missing:
        return QcResult(name, asset, False, ERROR, f"dvh_metrics lacks columns {missing}", {"missing_columns": missing})
    chain = ["max_gy", "d2_gy", "d50_gy"] + (["d95_gy"] if "d95_gy" in metrics.columns else []) + ["d98_gy", "min_gy"]
    tol = DVH_TOLERANCE_GY
    offending = []
    for row in metrics.to_dict("records"):
        what = []
        nan = [c for c in (*DVH_COLUMNS, *chain) if _not_finite(row.get(c))]
        if nan:
            what.append(f"not finite: {sorted(set(nan))}")
        if not _not_finite(row["volume_cc"]) and row["volume_cc"] <= 0:
            what.append(f"volume_cc {row['volume_cc']}")
        for hi, lo in zip(chain, chain[1:], strict=False):
            if hi not in nan and lo not in nan and row[hi] < row[lo] - tol:
                what.append(f"{hi} {row[hi]:.4f} < {lo} {row[lo]:.4f}")
        if not {"mean_gy", "min_gy", "max_gy"} & set(nan):
            if not row["min_gy"] - tol <= row["mean_gy"] <= row["max_gy"] + tol:
                what.append(f"mean_gy {row['mean_gy']:.4f} outside [min {row['min_gy']:.4f}, max {row['max_gy']:.4f}]")
        if what:
            offending.append({"roi_name": row.get("roi_name"), "source": row.get("source"), "what": "; ".join(what)})
    metadata = {"n_rows": len(metrics), "n_offending": len(offending), "offending": offending[:50]}
    if offending:
        lines = [f"{o['roi_name']} ({o['source']}): {o['what']}" for o in offending]
        return QcResult(
            name, asset, False, ERROR, f"{len(offending)} DVH row(s) inconsistent: " + _join(lines, n=4), metadata
        )
    return QcResult(name, asset, True, ERROR, f"{len(metrics)} DVH rows consistent", metadata)


def _not_finite(value) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True


# --------------------------------------------------------------------------- 8. autoseg completeness

_VERTEBRAE = {
    "cervical": tuple(f"vertebrae_C{i}" for i in range(1, 8)),
    "thoracic": tuple(f"vertebrae_T{i}" for i in range(1, 13)),
    "lumbar": tuple(f"vertebrae_L{i}" for i in range(1, 6)),
    "sacral": ("vertebrae_S1", "sacrum"),
}


def _T(*levels: int) -> tuple[str, ...]:
    return tuple(f"vertebrae_T{i}" for i in levels)


from rt_resources.segmentation.crop import LUNG_LOBES as _LUNG_LOBES  # noqa: E402 - one list of lobes

#: TotalSegmentator ``total`` organs expected when the scan covers a level:
#: organ -> (region, anchor classes: any present (>= MIN_VERTEBRA_CC) makes the organ expected,
#: organ classes: any non-empty counts as found). Anchors are levels where the organ lies in
#: every adult anatomy, not the organ's whole range, so a scan ending nearby does not warn
#: (a head-and-neck CT reaching T2-T4 expects lungs, trachea and esophagus, not the heart).
EXPECTED_ORGANS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "trachea": ("cervical/thoracic", ("vertebrae_C7", *_T(1, 2, 3)), ("trachea",)),
    "esophagus": ("thoracic", _T(2, 3, 4, 5, 6, 7, 8, 9), ("esophagus",)),
    "lungs": ("thoracic", _T(2, 3, 4, 5, 6, 7, 8, 9), _LUNG_LOBES),
    "heart": ("thoracic", _T(7, 8), ("heart",)),
    "aorta": ("thoracic/lumbar", (*_T(5, 6, 7, 8, 9, 10, 11, 12), "vertebrae_L1", "vertebrae_L2"), ("aorta",)),
    "liver": ("upper lumbar", ("vertebrae_T12", "vertebrae_L1"), ("liver",)),
    "spleen": ("upper lumbar", ("vertebrae_T11", "vertebrae_T12"), ("spleen",)),
    "kidney_left": ("upper lumbar", ("vertebrae_L1", "vertebrae_L2"), ("kidney_left",)),
    "kidney_right": ("upper lumbar", ("vertebrae_L2",), ("kidney_right",)),
    "hip_left": ("pelvis", ("sacrum", "vertebrae_S1"), ("hip_left",)),
    "hip_right": ("pelvis", ("sacrum", "vertebrae_S1"), ("hip_right",)),
    "urinary_bladder": ("pelvis", ("femur_left", "femur_right"), ("urinary_bladder",)),
}


def autoseg_completeness(totalseg_dir: Path) -> QcResult:
    """Body regions from TotalSegmentator's vertebra masks and the organs expected there
    (:data:`EXPECTED_ORGANS`) that are missing or empty (WARN); no vertebra at all: WARN,
    the body region cannot be inferred."""
    import SimpleITK as sitk

    name, asset = "autoseg_completeness", "totalseg_masks"
    totalseg_dir = Path(totalseg_dir)
    files = {p.name[: -len(".nii.gz")]: p for p in totalseg_dir.glob("*.nii.gz")}
    volume_cc: dict[str, float] = {}

    def cc(cls: str) -> float:  # 0 for absent or empty; each mask read at most once
        if cls not in volume_cc:
            if cls in files:
                mask = sitk.ReadImage(str(files[cls]))
                n = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
                volume_cc[cls] = n * float(np.prod(mask.GetSpacing())) / 1000.0
            else:
                volume_cc[cls] = 0.0
        return volume_cc[cls]

    levels = [v for group in _VERTEBRAE.values() for v in group if cc(v) >= MIN_VERTEBRA_CC]
    regions = [region for region, group in _VERTEBRAE.items() if set(group) & set(levels)]
    expected, present, missing = {}, [], {}
    for organ, (region, anchors, classes) in EXPECTED_ORGANS.items():
        hit = [a for a in anchors if (cc(a) >= MIN_VERTEBRA_CC if a.startswith("vertebrae_") else cc(a) > 0)]
        if not hit:
            continue
        expected[organ] = {"region": region, "because": hit[:3]}
        if any(cc(c) > 0 for c in classes):
            present.append(organ)
        else:
            missing[organ] = "empty mask" if any(c in files for c in classes) else "no mask file"
    metadata = {
        "regions": regions,
        "vertebrae": [v.removeprefix("vertebrae_") for v in levels],
        "expected": expected,
        "present": present,
        "missing": missing,
        "n_masks": len(files),
    }
    if not files:
        return QcResult(name, asset, False, WARN, f"no TotalSegmentator masks in {totalseg_dir}", metadata)
    if not levels:
        return QcResult(name, asset, False, WARN, "cannot infer body region: no vertebra segmented", metadata)
    if missing:
        lines = [f"{o} ({why}; expected at {', '.join(expected[o]['because'])})" for o, why in missing.items()]
        return QcResult(name, asset, False, WARN, f"{'/'.join(regions)} scan, missing: " + "; ".join(lines), metadata)
    return QcResult(
        name,
        asset,
        True,
        WARN,
        f"{'/'.join(regions)} scan ({metadata['vertebrae'][0]}-{metadata['vertebrae'][-1]}): "
        f"all {len(present)} expected organs present",
        metadata,
    )


# --------------------------------------------------------------------------- 9. radiomics NaN

RADIOMICS_ID_COLUMNS = ("course_key", "roi_name", "source")


def radiomics_nan(
    frame, max_fraction: float = RADIOMICS_MAX_NONFINITE, features_by_source: dict[str, list[str]] | None = None
) -> QcResult:
    """Per ROI row, the fraction of feature values that are NaN, infinite or not numbers;
    WARN above ``max_fraction`` (5 %). Rows below it with some NaN are listed too.

    ``features_by_source`` (``(source, roi_name)`` or ``source`` -> the features its parameter
    file computes) limits each row to its own features: a table holding CT, light-CT (BODY) and
    MR rows has the union of their feature sets as columns, and a feature the row's parameter
    file does not compute is not a NaN."""
    import pandas as pd

    name, asset = "radiomics_nan", "radiomics"
    features = [c for c in frame.columns if c not in RADIOMICS_ID_COLUMNS and not str(c).startswith("diagnostics_")]
    if frame.empty:
        return QcResult(name, asset, True, WARN, "no radiomics rows", {"n_rows": 0, "n_features": len(features)})
    if not features:
        return QcResult(name, asset, False, WARN, "radiomics table has no feature columns", {"n_rows": len(frame)})
    values = frame[features].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    table, over = [], []
    roi_names = frame["roi_name"].tolist() if "roi_name" in frame.columns else [None] * len(frame)
    sources = frame["source"].tolist() if "source" in frame.columns else [None] * len(frame)
    index = {f: j for j, f in enumerate(features)}
    for i in range(len(frame)):
        own_sets = features_by_source or {}
        own = own_sets.get((sources[i], roi_names[i])) or own_sets.get(sources[i])
        columns = [index[f] for f in own if f in index] if own else list(range(len(features)))
        n_bad = int(bad[i, columns].sum())
        if not n_bad:
            continue
        frac = n_bad / max(1, len(columns))
        entry = {
            "roi_name": roi_names[i],
            "source": sources[i],
            "n_nonfinite": n_bad,
            "fraction": round(frac, 4),
            "features": [features[j] for j in columns if bad[i, j]][:10],
        }
        table.append(entry)
        if frac > max_fraction:
            over.append(entry)
    all_bad = [f for j, f in enumerate(features) if bad[:, j].all()]
    metadata = {
        "n_rows": len(frame),
        "n_features": len(features),
        "max_fraction": max_fraction,
        "rois_with_nonfinite": table[:100],
        "features_nonfinite_everywhere": all_bad[:50],
    }
    if over:
        lines = [f"{o['roi_name']} ({o['source']}): {100 * o['fraction']:.1f} % of features NaN/inf" for o in over]
        return QcResult(name, asset, False, WARN, _join(lines, n=5), metadata)
    note = f"; {len(table)} ROI(s) with a few NaN (<= {100 * max_fraction:g} %)" if table else ""
    return QcResult(name, asset, True, WARN, f"{len(frame)} ROIs x {len(features)} features finite{note}", metadata)


# --------------------------------------------------------------------------- helpers


def _join(lines: list[str], n: int = 5) -> str:
    more = f"; and {len(lines) - n} more" if len(lines) > n else ""
    return "; ".join(lines[:n]) + more


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, tuples, sets and paths made JSON types; NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)
