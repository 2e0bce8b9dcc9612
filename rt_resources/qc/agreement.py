"""Auto vs manual agreement check: organs whose automatic contour disagrees with the manual one.

The threshold is a setting (``science.agreement_min_dice``, default 0.7): a Dice of 0.7 is the
level below which auto-segmentation studies of organs at risk treat a contour as needing an edit,
while small organs (optic nerves, chiasm, cochleae) often sit below it with both contours
acceptable, so a failure is a WARN to look at, never a block.
"""

from __future__ import annotations

import pandas as pd

from rt_resources.qc.results import QcResult


def agreement_dice(table: pd.DataFrame, min_dice: float) -> QcResult:
    """WARN listing every pair (standard name, auto source) whose Dice is below ``min_dice``."""
    low = table[table["dice"].fillna(0.0) < min_dice] if len(table) else table
    flagged = [
        {"roi_std": r["roi_std"], "source_auto": r["source_auto"], "dice": round(float(r["dice"]), 4)}
        for r in low.to_dict("records")
    ]
    if not len(table):
        return QcResult(
            "agreement_dice", "contour_agreement", True, "WARN", "no organ has both a manual and an automatic contour"
        )
    passed = not flagged
    description = (
        f"all {len(table)} organs reach Dice {min_dice:g}"
        if passed
        else f"{len(flagged)} of {len(table)} organs below Dice {min_dice:g}: "
        + ", ".join(f"{f['roi_std']} ({f['source_auto']}, {f['dice']:.2f})" for f in flagged[:10])
    )
    return QcResult(
        "agreement_dice",
        "contour_agreement",
        passed,
        "WARN",
        description,
        {"min_dice": min_dice, "n_pairs": len(table), "below": flagged},
    )
