"""Check of the radiomics table: features that came out NaN or infinite.

``radiomics_nan``: WARN when more than 5 % (:data:`RADIOMICS_MAX_NONFINITE`) of an ROI's
features are NaN or infinite; ROIs with fewer are listed. Each row counts among the features of
its own parameter set (rt_resources/radiomics/policy.py): a course table stacks ROIs of the full
set (1,223 features with CT.yaml), the basic set (first-order and shape), the light set (BODY) and
MR, and the columns a row's set does not compute are empty there, not NaN features.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rt_resources.qc.results import WARN, QcResult, join_lines

#: radiomics: largest fraction of non-finite features of one ROI before the check warns
RADIOMICS_MAX_NONFINITE = 0.05
#: the columns of the radiomics table that name the row; diagnostics_* columns are not features either
RADIOMICS_ID_COLUMNS = ("course_key", "roi_name", "source")


def radiomics_nan(
    frame,
    max_fraction: float = RADIOMICS_MAX_NONFINITE,
    features_by_source: Mapping[Any, Sequence[str]] | None = None,
    param_sets: Mapping[tuple[str, str], str] | None = None,
) -> QcResult:
    """Per ROI row, the fraction of feature values that are NaN, infinite or not numbers;
    WARN above ``max_fraction`` (5 %). Rows below it with some NaN are listed too.

    ``features_by_source`` (``(source, roi_name)`` or ``source`` -> the features its parameter
    file computes) limits each row to its own features: a table holding full-set, basic-set
    (auto-segmented organs outside the full list), light-set (BODY) and MR rows has the union of
    their feature sets as columns, and a feature the row's parameter set does not compute is not
    a NaN. ``param_sets`` (``(source, roi_name)`` -> full, basic, light, mr) names each row's set in
    the listed rows and counts the rows per set (``rows_by_param_set``)."""
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
    computed = np.zeros_like(bad)  # row i computes feature j (its parameter set has it)
    for i in range(len(frame)):
        own_sets = features_by_source or {}
        own = own_sets.get((sources[i], roi_names[i])) or own_sets.get(sources[i])
        columns = [index[f] for f in own if f in index] if own else list(range(len(features)))
        computed[i, columns] = True
        n_bad = int(bad[i, columns].sum())
        if not n_bad:
            continue
        frac = n_bad / max(1, len(columns))
        entry = {
            "roi_name": roi_names[i],
            "source": sources[i],
            **({"param_set": param_sets.get((sources[i], roi_names[i]))} if param_sets else {}),
            "n_nonfinite": n_bad,
            "fraction": round(frac, 4),
            "features": [features[j] for j in columns if bad[i, j]][:10],
        }
        table.append(entry)
        if frac > max_fraction:
            over.append(entry)
    # non-finite in every row that computes it
    all_bad = [f for j, f in enumerate(features) if computed[:, j].any() and (bad[:, j] | ~computed[:, j]).all()]
    metadata = {
        "n_rows": len(frame),
        "n_features": len(features),
        "max_fraction": max_fraction,
        "rois_with_nonfinite": table[:100],
        "features_nonfinite_everywhere": all_bad[:50],
    }
    sets = ""
    if param_sets:
        rows = Counter(param_sets.get((sources[i], roi_names[i]), "unknown") for i in range(len(frame)))
        metadata["rows_by_param_set"] = dict(sorted(rows.items()))
        sets = " (" + ", ".join(f"{n} {k}" for k, n in sorted(rows.items())) + ")"
    if over:
        lines = [f"{o['roi_name']} ({o['source']}): {100 * o['fraction']:.1f} % of features NaN/inf" for o in over]
        return QcResult(name, asset, False, WARN, join_lines(lines, n=5), metadata)
    note = f"; {len(table)} ROI(s) with a few NaN (<= {100 * max_fraction:g} %)" if table else ""
    summary = f"{len(frame)} ROIs{sets} x {len(features)} features finite{note}"
    return QcResult(name, asset, True, WARN, summary, metadata)
