"""What the cohort report reads under the data root, and nothing else.

The cohort tables (``cohort/*.parquet``) and each course's ``dvh_curves.parquet``, with only the
columns the report shows. ``cohort/courses.parquet`` (the key map: PatientID, name, UIDs) is never
opened: the report names courses by their key alone. A table that is absent stays ``None``; one that
cannot be read stays ``None`` too, with the reason in :attr:`CohortTables.unreadable`, so its section
says why it is empty instead of the whole report failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rt_resources.course_paths import DVH_CURVES
from rt_resources.fileio import is_course_key

#: the cohort tables a section reads: key -> file name under ``cohort/``
COHORT_FILES: dict[str, str] = {
    "qc": "qc.parquet",
    "dvh_metrics": "dvh_metrics.parquet",
    "agreement": "agreement.parquet",
    "robustness": "radiomics_robustness.parquet",
    "ingest": "ingest_report.parquet",
    "unmapped": "unmapped_rois.parquet",
}
#: the columns read from each (those a table lacks are simply not there; sections check)
COLUMNS: dict[str, tuple[str, ...]] = {
    "qc": ("course_key", "asset", "check", "passed", "severity"),
    "dvh_metrics": ("course_key", "roi_name", "source", "roi_std"),
    "agreement": ("course_key", "roi_std", "source_auto", "dice", "hd95_mm", "msd_mm", "volume_ratio"),
    "robustness": ("feature", "icc", "ci_low", "ci_high", "n_subjects", "n_raters", "robust"),
    "ingest": ("file_id", "path", "reason", "kind", "course_key", "stage"),
    "unmapped": ("roi_name", "source", "n_courses", "n_rows", "candidates", "reason"),
}
CURVE_COLUMNS = ("roi_name", "source", "dose_gy", "volume_pct")


class ReportError(Exception):
    """The data root holds nothing to report on (no cohort tables)."""


@dataclass(frozen=True)
class CohortTables:
    """The report's inputs; ``None`` where a table is absent or unreadable."""

    qc: pd.DataFrame | None = None
    dvh_metrics: pd.DataFrame | None = None
    dvh_curves: pd.DataFrame | None = None  #: every course's curves stacked, with course_key
    agreement: pd.DataFrame | None = None
    robustness: pd.DataFrame | None = None
    ingest: pd.DataFrame | None = None
    unmapped: pd.DataFrame | None = None
    #: every course of the cohort: the course folders and the keys the tables name
    course_keys: tuple[str, ...] = ()
    #: file (relative to the data root) -> why it could not be read
    unreadable: Mapping[str, str] = field(default_factory=dict)

    def problem(self, key: str) -> str | None:
        """Why the cohort table ``key`` could not be read (None: it was read, or it is absent)."""
        return self.unreadable.get(f"cohort/{COHORT_FILES[key]}")


def _read(path: Path, wanted: tuple[str, ...]) -> pd.DataFrame:
    """Only the ``wanted`` columns the file has (its schema is read first)."""
    import pyarrow.parquet as pq

    names = set(pq.read_schema(path).names)
    return pd.read_parquet(path, columns=[c for c in wanted if c in names])


def read_cohort(outdir: Path) -> CohortTables:
    """The report's inputs under the data root ``outdir``.

    Raises :class:`ReportError` when ``outdir/cohort`` holds none of the cohort tables.
    """
    outdir = Path(outdir)
    cohort = outdir / "cohort"
    present = {key: cohort / name for key, name in COHORT_FILES.items() if (cohort / name).is_file()}
    if not present:
        raise ReportError(
            f"{cohort} holds no cohort tables ({', '.join(COHORT_FILES.values())}): is {outdir} the --outdir of "
            "an `rtpipeline run` that finished? Run it first, or give the right --outdir"
        )
    unreadable: dict[str, str] = {}
    frames: dict[str, pd.DataFrame | None] = {}
    for key, path in present.items():
        try:
            frames[key] = _read(path, COLUMNS[key])
        except Exception as exc:  # a corrupt or foreign file: its section says so
            unreadable[f"cohort/{path.name}"] = f"{type(exc).__name__}: {exc}"
    course_dirs = (
        sorted(p for p in (outdir / "courses").iterdir() if p.is_dir() and is_course_key(p.name))
        if (outdir / "courses").is_dir()
        else []
    )
    curves = []
    for course in course_dirs:
        path = course / DVH_CURVES
        if not path.is_file():
            continue
        try:
            curves.append(_read(path, CURVE_COLUMNS).assign(course_key=course.name))
        except Exception as exc:
            unreadable[f"courses/{course.name}/{DVH_CURVES}"] = f"{type(exc).__name__}: {exc}"
    keys = {p.name for p in course_dirs}
    for key in ("qc", "dvh_metrics"):
        frame = frames.get(key)
        if frame is not None and "course_key" in frame.columns:
            keys |= {str(k) for k in frame["course_key"].dropna().unique() if is_course_key(str(k))}
    return CohortTables(
        **frames,
        dvh_curves=pd.concat(curves, ignore_index=True) if curves else None,
        course_keys=tuple(sorted(keys)),
        unreadable=unreadable,
    )
