"""Files a course refused while it was materialized: one ledger with the linker's rejections.

The linker refuses files before a course exists (not DICOM, truncated, a dose whose plan is
missing, ...). Others are refused later, by a course's own stage: a CT series with a missing
slice (``ct_image``), a RELATIVE dose or a dose on another frame of reference (``dose_grid``), an
MR whose registration cannot be used (``mr_images``). Each such stage writes
``courses/<key>/refused/<stage>.json`` (an empty list once the course uses all its files again),
and ``cohort/ingest_report.parquet`` stacks them beside the linker's rejections, so "which files of
my drop were not used, and why" has one answer: path, reason, kind, course key and stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rt_resources.fileio import write_json_atomic
from rt_resources.ingest.manifest import ManifestFile

REFUSED_DIR = "refused"
COLUMNS = ["path", "reason", "kind", "sop_instance_uid", "course_key", "stage"]


def refused_entry(manifest_file: ManifestFile, reason: str) -> dict:
    """A refusal of one of the manifest's files."""
    return {
        "path": manifest_file.path,
        "sop_instance_uid": manifest_file.sop_instance_uid,
        "kind": str(manifest_file.kind),
        "reason": reason,
    }


def write_refusals(course_dir: Path, stage: str, entries: list[dict]) -> Path:
    """Record what ``stage`` of the course refused (``[]``: it refused nothing this time)."""
    return write_json_atomic(Path(course_dir) / REFUSED_DIR / f"{stage}.json", entries)


def course_refusals(courses_root: Path) -> pd.DataFrame:
    """Every course's recorded refusals: one row per file and stage that refused it."""
    rows = []
    for path in sorted(Path(courses_root).glob(f"c-*/{REFUSED_DIR}/*.json")):
        course_key, stage = path.parent.parent.name, path.stem
        try:
            entries = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        rows += [{**e, "course_key": course_key, "stage": stage} for e in entries]
    return pd.DataFrame(rows, columns=COLUMNS)
