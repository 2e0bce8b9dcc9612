"""Auto vs manual agreement of one course: every organ that has a manual contour and an automatic
one (TotalSegmentator, a custom nnU-Net model), matched by standard name (``roi_std``, TG-263).

Pairs: each manual mask (``masks/manual/``) with each automatic mask of another source
(``masks/<source>/``, custom boolean structures excluded: they are built from the others) whose
``roi_std`` is the same. Unmapped names never pair (a wrong pair is worse than none). Several
manual ROIs with one standard name (a site that contours a structure twice) pair with the first
by name, and the others are noted. Geometry: :func:`rt_resources.agreement.metrics.agreement`.
Dose: the differences of Dmean and D2 (auto - manual, Gy) from the course's DVH table, where
both ROIs have a row; the manual ROI's row is its contour-based DVH.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from rt_resources.course_paths import CUSTOM, MANUAL, mask_source_dirs
from rt_resources.structures.masks import mask_index

COLUMNS = [
    "course_key",
    "roi_std",
    "roi_name_manual",
    "roi_name_auto",
    "source_auto",
    "dice",
    "hd95_mm",
    "msd_mm",
    "hd_max_mm",
    "volume_ratio",
    "manual_cc",
    "auto_cc",
    "mean_gy_diff",
    "d2_gy_diff",
    "note",
]


def agreement_pairs(masks_root: Path, name_map) -> tuple[list[dict], list[str]]:
    """``(pairs, notes)``: one ``{roi_std, manual, auto, source_auto}`` per organ with both contours
    (``manual``/``auto``: mask_index entries)."""
    sources = mask_source_dirs(masks_root)
    if MANUAL not in sources:
        return [], ["no manual masks"]
    notes: list[str] = []
    manual: dict[str, dict] = {}
    for entry in sorted(mask_index(sources[MANUAL]), key=lambda e: e["roi_name"]):
        std = name_map.standardize(entry["roi_name"], MANUAL).roi_std
        if std is None:
            continue
        if std in manual:
            notes.append(f"manual {entry['roi_name']!r} is also {std}: compared through {manual[std]['roi_name']!r}")
            continue
        manual[std] = entry
    pairs = []
    for source, folder in sources.items():
        if source in (MANUAL, CUSTOM):
            continue
        for entry in mask_index(folder):
            std = name_map.standardize(entry["roi_name"], source).roi_std
            if std is not None and std in manual:
                pairs.append({"roi_std": std, "manual": manual[std], "auto": entry, "source_auto": source})
    return pairs, notes


def course_agreement(course_key: str, masks_root: Path, dvh_metrics: pd.DataFrame | None, name_map) -> tuple:
    """``(table, notes)``: one row per pair (:data:`COLUMNS`); a pair that cannot be compared is
    left out with the reason in ``notes``."""
    import SimpleITK as sitk

    from rt_resources.agreement.metrics import AgreementError, agreement

    pairs, notes = agreement_pairs(masks_root, name_map)
    dose = _dose_lookup(dvh_metrics)
    rows = []
    for pair in pairs:
        manual, auto = pair["manual"], pair["auto"]
        label = f"{pair['roi_std']} ({MANUAL} {manual['roi_name']!r} vs {pair['source_auto']} {auto['roi_name']!r})"
        try:
            result = agreement(sitk.ReadImage(str(manual["path"])), sitk.ReadImage(str(auto["path"])))
        except (AgreementError, RuntimeError) as exc:
            notes.append(f"{label}: {exc}")
            continue
        m = dose.get((MANUAL, manual["roi_name"]), {})
        a = dose.get((pair["source_auto"], auto["roi_name"]), {})
        rows.append(
            {
                "course_key": course_key,
                "roi_std": pair["roi_std"],
                "roi_name_manual": manual["roi_name"],
                "roi_name_auto": auto["roi_name"],
                "source_auto": pair["source_auto"],
                "dice": result.dice,
                "hd95_mm": result.hd95_mm,
                "msd_mm": result.msd_mm,
                "hd_max_mm": result.hd_max_mm,
                "volume_ratio": result.volume_ratio,
                "manual_cc": result.manual_cc,
                "auto_cc": result.auto_cc,
                "mean_gy_diff": _diff(a, m, "mean_gy"),
                "d2_gy_diff": _diff(a, m, "d2_gy"),
                "note": result.note,
            }
        )
    return pd.DataFrame(rows, columns=COLUMNS), notes


def _dose_lookup(dvh_metrics: pd.DataFrame | None) -> dict[tuple[str, str], dict]:
    if dvh_metrics is None or not len(dvh_metrics):
        return {}
    return {(r["source"], r["roi_name"]): r for r in dvh_metrics.to_dict("records")}


def _diff(auto: dict, manual: dict, column: str) -> float:
    if column in auto and column in manual:
        return float(auto[column]) - float(manual[column])
    return float("nan")
