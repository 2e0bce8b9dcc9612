"""Checks of the dose: its units and type, its grid's coverage of every ROI, and the DVH table.

Thresholds and why
------------------
* ``dose_units`` (ERROR): dose.json in Gy; every RTDOSE summed into it in GY with DoseType
  PHYSICAL or EFFECTIVE, not mixed. WARN without a prescription, or when the dose maximum is
  not within 0.8-2.0 x the prescription (absolute DVH metrics are still right).
* ``dose_coverage``: a voxel is uncovered when its centre lies more than half a dose voxel
  outside the dose grid (where :class:`rt_resources.dvh.sampling.DoseSampler` returns 0 Gy).
  Targets (name or type PTV/CTV/GTV/ITV) fail with ERROR above 0.5 % uncovered (their D98/D95
  read from 0 Gy samples); other ROIs WARN above 1 % (BODY often extends beyond the grid).
* ``dvh_sanity``: orderings hold to 1e-6 Gy (the metric code clamps D_x to [min, max]).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np

from rt_resources.dicom.sop_classes import Kind
from rt_resources.imaging.image_header import image_geometry, read_image_header
from rt_resources.ingest.manifest import ManifestError, read_manifest
from rt_resources.qc.results import ERROR, WARN, QcResult, join_lines
from rt_resources.structures.masks import mask_index

#: ROI names (case-insensitive, anywhere in the name) and RTROIInterpretedTypes that are targets
TARGET_NAME = re.compile(r"PTV|CTV|GTV|ITV", re.IGNORECASE)
TARGET_TYPES = frozenset({"PTV", "CTV", "GTV"})
#: uncovered fraction of a target above which its dose metrics are wrong (ERROR)
TARGET_UNCOVERED_MAX = 0.005
#: uncovered fraction of any other ROI above which the check warns
OTHER_UNCOVERED_MAX = 0.01
DVH_TOLERANCE_GY = 1e-6


# --------------------------------------------------------------------------- dose units


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
    headers: dict[str, dict] = {}
    try:
        headers = {f.sop_instance_uid: f.info for f in read_manifest(course_dir).of_kind(Kind.RTDOSE)}
    except ManifestError as exc:
        warnings.append(f"RTDOSE units and types not verified: {exc}")
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
        return QcResult(name, asset, False, ERROR, join_lines(errors + warnings), metadata)
    if warnings:
        return QcResult(name, asset, False, WARN, join_lines(warnings), metadata)
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


# --------------------------------------------------------------------------- dose coverage


def is_target(roi_name: str, interpreted_type: str = "") -> bool:
    """A planning target: PTV/CTV/GTV/ITV in the name, or a PTV/CTV/GTV interpreted type."""
    return bool(TARGET_NAME.search(roi_name)) or interpreted_type.upper() in TARGET_TYPES


def dose_coverage(dose_path: Path, masks_dir: Path) -> QcResult:
    """Per ROI mask, the fraction of voxels whose centre lies outside the dose grid (more than
    half a dose voxel beyond its outer voxel centres, where the DVH reads 0 Gy). ERROR when a
    target has more than 0.5 % uncovered, WARN when another ROI has more than 1 %."""
    import SimpleITK as sitk

    name, asset = "dose_coverage", "dose_grid"
    d_origin, d_spacing, d_dir, d_size = image_geometry(read_image_header(dose_path))
    table, errors, warnings = [], [], []
    for roi in mask_index(masks_dir):
        mask = sitk.ReadImage(str(roi["path"]))
        arr = sitk.GetArrayViewFromImage(mask)
        m_origin, m_spacing, m_dir, _ = image_geometry(mask)
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
        return QcResult(name, asset, False, ERROR, join_lines(errors + warnings), metadata)
    if warnings:
        return QcResult(
            name, asset, False, WARN, join_lines(warnings) + " (metrics of these ROIs count 0 Gy there)", metadata
        )
    return QcResult(name, asset, True, ERROR, f"all {len(table)} ROI masks inside the dose grid", metadata)


# --------------------------------------------------------------------------- DVH sanity

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
            name, asset, False, ERROR, f"{len(offending)} DVH row(s) inconsistent: " + join_lines(lines, n=4), metadata
        )
    return QcResult(name, asset, True, ERROR, f"{len(metrics)} DVH rows consistent", metadata)


def _not_finite(value) -> bool:
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return True
