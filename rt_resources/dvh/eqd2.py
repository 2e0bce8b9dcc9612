"""DVH metrics in EQD2 of one course: each ROI on the course's EQD2 dose for its own alpha/beta.

The course's treatment phases (``dose_phases/``, one physical dose per summed plan with its
number of fractions, see ``dose.json``) are converted voxel by voxel and summed
(:func:`rt_resources.dose.eqd2.eqd2`); one EQD2 grid per distinct alpha/beta among the ROIs,
each ROI's DVH then taken on its grid by the same code as the physical DVH
(:func:`rt_resources.dvh.course.course_dvh`: contour-based for the manual ROIs, mask-based for
the others). Alpha/beta comes from the ROI's standard name (``roi_std``,
:mod:`rt_resources.naming.tg263`) in the alpha/beta table.

When the phases cannot be separated (a plan-sum RTDOSE only) or a plan states no number of
fractions, no EQD2 is computed: every ROI gets a row with empty EQD2 columns and the reason in
``eqd2_reason``, never an EQD2 of the summed physical dose.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rt_resources.dvh.course import DvhTask, course_dvh, dvh_tasks
from rt_resources.structures.rtstruct import ROI

#: physical metric -> its EQD2 column
EQD2_COLUMNS = {
    m: m.replace("_gy", "_eqd2_gy")
    for m in ("mean_gy", "min_gy", "max_gy", "d2_gy", "d50_gy", "d95_gy", "d98_gy", "d1cc_gy", "d0_1cc_gy")
}
ID_COLUMNS = ["course_key", "roi_name", "source", "method", "roi_std"]
INFO_COLUMNS = ["alpha_beta_gy", "alpha_beta_source", "fractions", "eqd2_reason"]
COLUMNS = ID_COLUMNS + INFO_COLUMNS + list(EQD2_COLUMNS.values())


@dataclass(frozen=True)
class PhaseFile:
    """One treatment phase as ``dose.json`` lists it: its dose file and its plan's fractions."""

    path: Path
    plan_uid: str
    fractions: int | None
    fraction_groups: int | None = 1


def read_phases(course_dir: Path, dose_info: dict) -> tuple[list[PhaseFile], str]:
    """``(phases, reason)`` from a course's ``dose.json``; ``reason`` is non-empty when EQD2 cannot
    be computed from them (and says why)."""
    phases = [
        PhaseFile(
            Path(course_dir) / "dose_phases" / p["file"], p["plan_uid"], p.get("fractions"), p.get("fraction_groups")
        )
        for p in dose_info.get("phases", []) or []
    ]
    if not phases:
        return [], dose_info.get("phases_reason") or "the course's dose has no separable treatment phases"
    for p in phases:
        if p.fraction_groups and p.fraction_groups > 1:
            return phases, f"plan {p.plan_uid} has {p.fraction_groups} fraction groups: its phases cannot be separated"
        if not p.path.is_file():
            return phases, f"the dose of plan {p.plan_uid} is missing ({p.path.name}): run dose_grid again"
    return phases, ""


def course_dvh_eqd2(
    course_key: str,
    course_dir: Path,
    dose_info: dict,
    rois: list[ROI],
    masks_root: Path,
    single_plane_mm: float,
    name_map,
    alpha_beta_table,
    workers: int = 1,
) -> tuple[pd.DataFrame, list[str]]:
    """``(table, notes)``: one row per ROI that has a physical DVH (:data:`COLUMNS`)."""
    import SimpleITK as sitk

    from rt_resources.dose.eqd2 import EQD2Error, Phase, eqd2, withheld_reason

    tasks, notes = dvh_tasks(rois, masks_root)
    info: dict[tuple[str, str], dict] = {}
    for t in tasks:
        std = name_map.standardize(t.roi_name, t.source).roi_std
        ab = alpha_beta_table.lookup(std, t.roi_name)
        info[(t.source, t.roi_name)] = {
            "course_key": course_key,
            "roi_name": t.roi_name,
            "source": t.source,
            "method": "contour" if t.roi is not None else "mask",
            "roi_std": std,
            "alpha_beta_gy": float(ab.value_gy),
            "alpha_beta_source": ab.source,
        }
    phase_files, reason = read_phases(course_dir, dose_info)
    phases = []
    if not reason:
        phases = [Phase(p.plan_uid, sitk.ReadImage(str(p.path), sitk.sitkFloat64), p.fractions) for p in phase_files]
        reason = withheld_reason(phases)
    fractions = "+".join(str(p.fractions) for p in phase_files) if phase_files else ""
    if reason:
        return _table(info, {}, fractions, reason), notes
    metrics: dict[tuple[str, str], dict] = {}
    by_ab: dict[float, set[tuple[str, str]]] = {}
    for key, row in info.items():
        by_ab.setdefault(row["alpha_beta_gy"], set()).add(key)
    with tempfile.TemporaryDirectory(prefix=".eqd2-", dir=course_dir) as scratch:
        for i, (ab, keys) in enumerate(sorted(by_ab.items())):
            try:
                image = eqd2(phases, ab)
            except EQD2Error as exc:
                return _table(info, {}, fractions, str(exc)), notes
            path = Path(scratch) / f"eqd2-{i}.nii.gz"
            sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(path))

            def wanted(task: DvhTask, keys=keys) -> bool:
                return (task.source, task.roi_name) in keys

            table, _, more = course_dvh(
                course_key, path, rois, masks_root, None, single_plane_mm, workers=workers, select=wanted
            )
            notes += [f"EQD2 (alpha/beta {ab:g} Gy): {n}" for n in more if "no contours" not in n]
            for row in table.to_dict("records"):
                metrics[(row["source"], row["roi_name"])] = row
    return _table(info, metrics, fractions, ""), notes


def _table(info: dict, metrics: dict, fractions: str, reason: str) -> pd.DataFrame:
    rows = []
    for key, ids in info.items():
        m = metrics.get(key)
        row = {**ids, "fractions": fractions, "eqd2_reason": reason if m is None and reason else ""}
        if m is None and not reason:
            row["eqd2_reason"] = "no DVH on the EQD2 dose"
        for physical, column in EQD2_COLUMNS.items():
            row[column] = float(m[physical]) if m is not None and physical in m else np.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=COLUMNS)


def summary_table(table: pd.DataFrame, n: int = 30) -> str:
    """A markdown preview (no identifiers)."""
    cols = ["roi_name", "source", "roi_std", "alpha_beta_gy", "mean_eqd2_gy", "d2_eqd2_gy", "eqd2_reason"]
    view = table[[c for c in cols if c in table.columns]].head(n).copy()
    return view.round(3).to_markdown(index=False) if len(view) else "no ROI"


def with_eqd2(metrics: pd.DataFrame, eqd2: pd.DataFrame | None) -> pd.DataFrame:
    """The physical DVH rows with their EQD2 columns beside them (joined on course, ROI and
    source); rows without an EQD2 row get empty EQD2 columns and say why in ``eqd2_reason``.

    ``metrics`` carries the current standard names (``roi_std``); an EQD2 row computed under another
    name mapping (its own ``roi_std`` differs, so its alpha/beta may be another structure's) is not
    used until the course's dvh_eqd2 runs again."""
    extra = INFO_COLUMNS + list(EQD2_COLUMNS.values())
    text = ("alpha_beta_source", "fractions", "eqd2_reason")
    keys = ["course_key", "roi_name", "source"]
    out = metrics.copy()
    if eqd2 is None or not len(eqd2) or not len(out) or not set(keys) <= set(out.columns):
        for c in extra:
            out[c] = pd.Series("" if c in text else np.nan, index=out.index, dtype=object if c in text else float)
        out["eqd2_reason"] = "no EQD2 table for the course"
        return out
    joined = eqd2[keys + extra + ["roi_std"]].rename(columns={"roi_std": "_eqd2_roi_std"})
    out = out.merge(joined, on=keys, how="left")
    missing = out["alpha_beta_source"].isna()
    out.loc[missing, "eqd2_reason"] = "no EQD2 row (the course's dvh_eqd2 has not run since)"
    if "roi_std" in out.columns:
        renamed = ~missing & (out["roi_std"].fillna("") != out["_eqd2_roi_std"].fillna(""))
        for c in extra:
            if c not in text:
                out.loc[renamed, c] = np.nan
        out.loc[renamed, ["alpha_beta_source", "fractions"]] = ""
        out.loc[renamed, "eqd2_reason"] = "the structure name mapping changed since its EQD2: run dvh_eqd2 again"
    for c in text:
        out[c] = out[c].fillna("")
    return out.drop(columns="_eqd2_roi_std")
