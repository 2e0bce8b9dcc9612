"""PET check: every PET series of the course is quantitative (SUV), or says why not.

SUV is where PET tools go wrong (a missing weight, DecayCorrection NONE, Units the reader does not
know, a start time after the scan): a series whose SUV cannot be computed the QIBA way keeps only
its activity concentration, and this check lists it with the reason, so a cohort's SUV table never
silently lacks a patient. A WARN: the course's other outputs are unaffected.
"""

from __future__ import annotations

from rt_resources.qc.results import QcResult


def pet_suv(records: list[dict], refused: dict[str, str]) -> QcResult:
    """WARN listing every PET series without SUV (written with activity only, or refused)."""
    without = [
        {"label": r["label"], "series_uid": r["series_uid"], "reason": r["suv_reason"]}
        for r in records
        if not r["has_suv"]
    ] + [{"label": "", "series_uid": uid, "reason": reason} for uid, reason in sorted(refused.items())]
    n = len(records) + len(refused)
    if not n:
        return QcResult("pet_suv", "pet_images", True, "WARN", "the course has no PET")
    passed = not without
    description = (
        f"all {n} PET series in SUVbw"
        if passed
        else f"{len(without)} of {n} PET series without SUV: "
        + "; ".join(f"{w['label'] or w['series_uid']}: {w['reason']}" for w in without[:5])
    )
    return QcResult("pet_suv", "pet_images", passed, "WARN", description, {"without_suv": without})
