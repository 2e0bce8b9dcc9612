"""The per-course summary ``rtpipeline run`` prints at the end."""

from __future__ import annotations

import json
from pathlib import Path

from rt_assets.headless.follow import CourseState


def dvh_rois(course_dir: Path) -> str:
    """How many ROIs have a DVH, or why none ("no dose")."""
    path = course_dir / "dvh_metrics.parquet"
    if path.exists():
        import pyarrow.parquet as pq

        return str(pq.read_metadata(path).num_rows)
    return "no dose" if not (course_dir / "dose.nii.gz").exists() else "-"


def qc_summary(course_dir: Path) -> str:
    """PASS, or the failed checks by severity (e.g. "FAIL 1E 2W"), from the course's qc.json."""
    path = course_dir / "qc.json"
    if not path.exists():
        return "-"
    doc = json.loads(path.read_text())
    failed = doc["counts"]["failed_by_severity"]
    if doc["status"] == "PASS":
        return "PASS"
    return f"{doc['status']} {failed.get('ERROR', 0)}E {failed.get('WARN', 0)}W"


def course_table(states: list[CourseState], out: Path) -> str:
    """One line per course: status, what it holds, DVH ROIs, QC verdict, its folder; then the
    reason it ran (or failed)."""
    lines = [
        f"{'course':<16} {'status':<9} {'CT':>4} {'RTSTRUCT':>8} {'RTPLAN':>6} {'RTDOSE':>6} {'DVH ROIs':>8} "
        f"{'QC':<12} outputs"
    ]
    for s in states:
        c = s.course
        folder = out / "courses" / c.key
        n_ct = c.n_ct_slices
        lines.append(
            f"{c.key:<16} {s.status:<9} {n_ct:>4} {len(c.struct_uids):>8} {len(c.plan_uids):>6} "
            f"{len(c.dose_uids):>6} {dvh_rois(folder):>8} {qc_summary(folder):<12} {folder}"
        )
        if s.status == "FAILED":
            lines.append(f"{'':<16} {s.error}")
        elif s.stages_run and s.plan.reason != "unchanged":
            lines.append(f"{'':<16} ran: {', '.join(s.stages_run)} ({s.plan.reason})")
    return "\n".join(lines)
