"""DVH bands of a cohort: per structure, the median and interquartile range of the cumulative DVH
(volume % against dose in Gy) over the courses that have it.

**Which structure.** A curve's structure is its TG-263 standard name (``roi_std`` of
``dvh_metrics.parquet``, joined on course key, ROI name and source); where that is empty or the
column is absent (outputs from before the mapping), the ROI name as contoured stands in.

**Which curve of a course** (:data:`SOURCE_RULE`): a course counts once per structure. When it has
the structure from several sources, the manual contour is taken, else TotalSegmentator's, else the
other sources in alphabetical order; among ROIs of one source with the same standard name, the
first by ROI name.

**Bands.** Each course's curve is interpolated linearly (``numpy.interp``) on a common dose axis
from 0 Gy to the highest dose of the structure's curves, :data:`N_DOSE_POINTS` points; below a
curve's first dose it holds its first volume (100 % for a cumulative DVH), beyond its last dose
0 %. The 25th, 50th and 75th percentiles over courses are taken at each dose (linear
interpolation between order statistics, numpy's default).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

SOURCE_RULE = (
    "a course counts once per structure: its manual contour when it has one, else TotalSegmentator's, "
    "else the other sources in alphabetical order; among ROIs of one source with the same name, the first "
    "by ROI name"
)
N_DOSE_POINTS = 201
MIN_COURSES = 2
KEY = ["course_key", "roi_name", "source"]


@dataclass(frozen=True)
class Band:
    """One structure's DVH band over the cohort."""

    label: str
    n_courses: int
    dose_gy: np.ndarray
    p25_pct: np.ndarray
    median_pct: np.ndarray
    p75_pct: np.ndarray


@dataclass(frozen=True)
class Labels:
    """Each curve's structure label, and how the labels were chosen (in words, for the report)."""

    keys: pd.DataFrame  #: course_key, roi_name, source, label
    note: str


def structure_labels(curve_keys: pd.DataFrame, metrics: pd.DataFrame | None) -> Labels:
    """Label each (course_key, roi_name, source) of ``curve_keys`` with its standard name from
    ``metrics`` (``roi_std``), else its ROI name (module docstring)."""
    keys = curve_keys[KEY].drop_duplicates()
    if metrics is None or "roi_std" not in metrics.columns or not set(KEY) <= set(metrics.columns):
        why = (
            "has no roi_std column (an output from before the TG-263 mapping)"
            if metrics is not None
            else "is not available"
        )
        note = f"cohort/dvh_metrics.parquet {why}: structures are grouped by their ROI name as contoured"
        return Labels(keys.assign(label=keys["roi_name"]), note)
    std = metrics[[*KEY, "roi_std"]].dropna(subset=KEY)
    std = std.assign(**{k: std[k].astype(str) for k in KEY}).drop_duplicates(KEY)
    joined = keys.merge(std, on=KEY, how="left")
    has_std = joined["roi_std"].notna() & (joined["roi_std"].astype(str).str.strip() != "")
    joined["label"] = joined["roi_std"].where(has_std, joined["roi_name"]).astype(str)
    n_fallback = int((~has_std).sum())
    note = "structures are grouped by their TG-263 standard name (roi_std)"
    if n_fallback:
        note += (
            f"; {n_fallback} of {len(joined)} curves have no standard name and are grouped by their ROI name "
            "as contoured"
        )
    return Labels(joined[[*KEY, "label"]], note)


def _source_rank(source: str) -> tuple[int, str]:
    return (0 if source == "manual" else 1 if source == "totalseg" else 2, source)


def select_curves(labels: pd.DataFrame) -> pd.DataFrame:
    """One (course_key, roi_name, source) per (course_key, label), by :data:`SOURCE_RULE`."""
    if labels.empty:
        return labels
    ranked = labels.assign(_rank=labels["source"].map(_source_rank))
    ranked = ranked.sort_values(["course_key", "label", "_rank", "roi_name"], kind="stable")
    return ranked.drop_duplicates(["course_key", "label"]).drop(columns="_rank").reset_index(drop=True)


def _interpolate(dose_gy: np.ndarray, volume_pct: np.ndarray, dose_axis: np.ndarray) -> np.ndarray | None:
    """One curve's volume % on ``dose_axis`` (module docstring); None when it has no finite point."""
    finite = np.isfinite(dose_gy) & np.isfinite(volume_pct)
    if not finite.any():
        return None
    dose, first = np.unique(dose_gy[finite], return_index=True)  # sorted; the first row of a repeated dose
    volume = volume_pct[finite][first]
    return np.interp(dose_axis, dose, volume, left=volume[0], right=0.0)


def dvh_bands(
    curves: pd.DataFrame, metrics: pd.DataFrame | None, min_courses: int = MIN_COURSES
) -> tuple[list[Band], str]:
    """The bands of every structure present in at least ``min_courses`` courses, the manually
    contoured ones first, each group the most frequent first (then by name), and the labelling
    note (:func:`structure_labels`).

    ``curves``: course_key, roi_name, source, dose_gy, volume_pct (``dvh_curves.parquet`` rows).
    """
    curves = curves.dropna(subset=[*KEY, "dose_gy", "volume_pct"])
    for column in KEY:
        if not pd.api.types.is_string_dtype(curves[column]):
            curves = curves.assign(**{column: curves[column].astype(str)})
    labels = structure_labels(curves[KEY].drop_duplicates(), metrics)
    chosen = select_curves(labels.keys)
    counts = chosen.groupby("label")["course_key"].nunique()
    kept = counts[counts >= min_courses]
    # planners' structures first: a label that some course has as a manual contour, then the others
    manual = set(chosen.loc[chosen["source"] == "manual", "label"])
    order = sorted(kept.index, key=lambda label: (label not in manual, -int(kept[label]), label))
    rows_of = {label: group for label, group in chosen.groupby("label")}
    positions = curves.groupby(KEY, sort=False).indices
    dose_all = curves["dose_gy"].to_numpy(dtype=float)
    volume_all = curves["volume_pct"].to_numpy(dtype=float)
    bands = []
    for label in order:
        keys = rows_of[label][KEY].itertuples(index=False, name=None)
        parts = [(dose_all[i], volume_all[i]) for i in (positions[key] for key in keys)]
        max_dose = max(float(np.nanmax(dose)) for dose, _ in parts)
        axis = np.linspace(0.0, max(max_dose, 1e-3), N_DOSE_POINTS)
        stack = [v for v in (_interpolate(dose, volume, axis) for dose, volume in parts) if v is not None]
        if len(stack) < min_courses:
            continue
        p25, p50, p75 = np.percentile(np.vstack(stack), [25, 50, 75], axis=0)
        bands.append(Band(str(label), len(stack), axis, p25, p50, p75))
    return bands, labels.note
