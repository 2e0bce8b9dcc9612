"""A course's total dose, from the RTDOSE and RTPLAN files its manifest lists."""

from __future__ import annotations

import json
from pathlib import Path

from rt_resources.course_paths import DOSE as DOSE_FILE
from rt_resources.course_paths import DOSE_INFO as DOSE_INFO_FILE
from rt_resources.dose.plan import PlanInfo, read_plan
from rt_resources.dose.rtdose import DoseError, DoseGrid, read_rtdose
from rt_resources.dose.total import TotalDose, total_dose
from rt_resources.ingest.manifest import Manifest, ManifestFile

__all__ = ["DOSE_FILE", "DOSE_INFO_FILE", "course_total_dose", "dose_info", "read_dose_info"]


def course_total_dose(
    plan_files: list[ManifestFile], dose_files: list[ManifestFile], manifest: Manifest
) -> tuple[TotalDose, dict[str, PlanInfo], list[ManifestFile]]:
    """``(total, plans by UID, input files)`` from the course's RTPLAN and RTDOSE files (found and
    checked: :func:`rt_resources.ingest.manifest.source_files`); unreadable doses are listed, not
    raised."""
    plans = {p.sop_instance_uid: p for p in (read_plan(f.abspath) for f in plan_files)}
    doses: list[DoseGrid] = []
    refused = []
    for f in dose_files:
        try:
            doses.append(read_rtdose(f.abspath))
        except DoseError as exc:
            refused.append({"sop_instance_uid": f.sop_instance_uid, "used": False, "why": str(exc)})
    total = total_dose(doses, plans, manifest.frame_of_reference_uid)
    total.components += refused
    if not doses and refused:
        total.decision = "no usable RTDOSE: " + "; ".join(r["why"] for r in refused)
    return total, plans, plan_files + dose_files


def dose_info(total: TotalDose, plans: dict[str, PlanInfo]) -> dict:
    """The sidecar ``dose.json``: prescription and how the total was made."""
    return {
        "unit": "Gy",
        "decision": total.decision,
        "prescription_gy": total.prescription_gy,
        "plans_summed": [
            {
                "sop_instance_uid": uid,
                "prescription_gy": plans[uid].prescription_gy if uid in plans else None,
                "prescription_source": plans[uid].prescription_source if uid in plans else "",
                "fractions": plans[uid].fractions if uid in plans else None,
            }
            for uid in total.plans_summed
        ],
        "components": total.components,
        "notes": total.notes,
        # the treatment phases (one per summed plan) whose doses lie in dose_phases/, for EQD2/BED
        "phases": [
            {
                "file": phase_file(i),
                "plan_uid": uid,
                "fractions": plans[uid].fractions if uid in plans else None,
                "fraction_groups": plans[uid].fraction_groups if uid in plans else None,
            }
            for i, (uid, _) in enumerate(total.phases)
        ],
        "phases_reason": total.phases_reason,
    }


def phase_file(index: int) -> str:
    """The file of the ``index``-th phase under ``dose_phases/``."""
    return f"phase-{index + 1}.nii.gz"


def read_dose_info(course_dir: Path) -> dict:
    return json.loads((Path(course_dir) / DOSE_INFO_FILE).read_text())
