"""Research tables in an export: each course's own, and the cohort's filtered to the exported courses.

The tables are keyed by the course key (a pseudonym) and carry no PatientID or name, so they are
copied as they are, byte for byte, unless they hold something the DICOM part of the export
replaced: a source UID (QC results name objects and frames of reference by UID) becomes its export
UID, so tables and exported objects still agree and no source UID leaves the site; a
``patient_id`` column (written by older versions of the pipeline) becomes the course key, and name
or accession columns are dropped. Each table's entry in the report says which it was.

Only the tables named here leave the data root: never ``cohort/courses.parquet`` (the key map,
course key -> patient) nor ``cohort/ingest_report.parquet`` (paths of the drop).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd

from rt_resources.export.residual import Identifiers
from rt_resources.export.uids import UidMap
from rt_resources.fileio import write_atomic, write_parquet_atomic

COURSE_TABLES = (
    "dvh_metrics.parquet",
    "dvh_curves.parquet",
    "dvh_eqd2.parquet",
    "agreement.parquet",
    "radiomics.parquet",
    "pet_metrics.parquet",
    "qc.json",
)
COHORT_TABLES = ("dvh_metrics.parquet", "radiomics.parquet", "agreement.parquet", "pet_metrics.parquet")
DROPPED_COLUMNS = ("patient_name", "patient_birth_date", "accession_number")


def export_table(src: Path, dst: Path, uids: UidMap, course_key: str) -> dict:
    """Copy one course table to ``dst`` (rewritten only where it must be); its report entry."""
    if src.suffix == ".json":
        text = src.read_text()
        new = uids.text(text)
        if new != text:
            write_atomic(dst, lambda tmp: tmp.write_text(new))
            return {"table": src.name, "action": "rewritten", "changes": ["source UIDs replaced by their export UIDs"]}
    else:
        frame, changes = clean_frame(pd.read_parquet(src), uids, course_key)
        if changes:
            write_parquet_atomic(dst, frame)
            return {"table": src.name, "action": "rewritten", "changes": changes}
    write_atomic(dst, lambda tmp: shutil.copyfile(src, tmp))
    return {"table": src.name, "action": "copied", "changes": []}


def clean_frame(frame: pd.DataFrame, uids: UidMap, course_key: str | None) -> tuple[pd.DataFrame, list[str]]:
    """``frame`` without identifying columns and with export UIDs; what was changed."""
    changes = []
    frame = frame.copy()
    if "patient_id" in frame.columns:
        frame["patient_id"] = frame["course_key"] if "course_key" in frame.columns else course_key
        changes.append("patient_id set to the course key")
    dropped = [c for c in DROPPED_COLUMNS if c in frame.columns]
    if dropped:
        frame = frame.drop(columns=dropped)
        changes.append(f"columns dropped: {', '.join(dropped)}")
    for col in frame.columns:
        if not (frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col])):
            continue
        old = frame[col].tolist()
        new = [uids.text(v) if isinstance(v, str) else v for v in old]
        n = sum(isinstance(a, str) and a != b for a, b in zip(old, new, strict=True))
        if n:
            frame[col] = pd.Series(new, index=frame.index, dtype=frame[col].dtype)
            changes.append(f"{col}: source UIDs replaced by their export UIDs in {n} rows")
    return frame, changes


def table_texts(path: Path) -> list[tuple[str, str]]:
    """(place, text) of a written table, for the residual-identifier check."""
    if path.suffix == ".json":
        return [(path.name, path.read_text())]
    frame = pd.read_parquet(path)
    out = [(f"{path.name} column names", " ".join(map(str, frame.columns)))]
    for col in frame.columns:
        if frame[col].dtype == object or pd.api.types.is_string_dtype(frame[col]):
            out += [(f"{path.name} column {col}", v) for v in frame[col].dropna().unique() if isinstance(v, str)]
    return out


def screen_tables(folder: Path, entries: list[dict], identifiers: Identifiers, warnings: list[str]) -> None:
    """Remove a written table holding an identifier of a patient (its entry says so); warn on name parts."""
    for entry in entries:
        path = folder / entry["table"]
        if entry["action"] == "refused" or not path.exists():
            continue
        hard, soft = identifiers.search(table_texts(path))
        if hard:
            path.unlink()
            entry.update(action="refused", reason=f"an identifier of the patient occurs in {', '.join(hard)}")
        elif soft:
            warnings.append(
                f"a part of a patient's name occurs as a word in {', '.join(soft)}: check it is not the name"
            )


def export_cohort_tables(src_dir: Path, dst_dir: Path, keys: list[str], uids: UidMap) -> list[dict]:
    """The cohort tables, rows of ``keys`` only, into ``dst_dir``; stale ones of an earlier export removed."""
    entries = []
    for name in COHORT_TABLES:
        src, dst = Path(src_dir) / name, Path(dst_dir) / name
        if not src.exists() or not keys:
            if dst.exists():
                dst.unlink()
            continue
        frame = pd.read_parquet(src)
        if "course_key" not in frame.columns:
            entries.append({"table": name, "action": "refused", "reason": "no course_key column to filter on"})
            if dst.exists():
                dst.unlink()
            continue
        frame = frame[frame["course_key"].isin(keys)].reset_index(drop=True)
        frame, changes = clean_frame(frame, uids, None)
        write_parquet_atomic(dst, frame)
        entries.append({"table": name, "action": "filtered", "rows": len(frame), "changes": changes})
    return entries
