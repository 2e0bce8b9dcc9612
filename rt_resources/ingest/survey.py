"""Survey a drop: one incremental scan, linked into courses, with readiness and tables.

This is the single entry point the sensor, the CLI and the assets use, so they all see
the drop the same way.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rt_resources.ingest.course_keys import load_site_secret
from rt_resources.ingest.index import DropIndex, FileEntry, Refresh, ScanResult, iter_ancestors
from rt_resources.ingest.link_state import LinkStore
from rt_resources.ingest.linking import Course, LinkResult
from rt_resources.state import state_dir


@dataclass
class DropSurvey:
    scan: ScanResult
    links: LinkResult
    #: digest of the courses (key, content) and refused files (path, reason) the drop gives the
    #: cohort tables: :meth:`LinkStore.state` (equal to :func:`links_digest` of ``links``)
    state: str

    @property
    def courses(self) -> list[Course]:
        return self.links.courses


def _index(drop_root: Path, data_root: Path, index_dir: Path | None, watch: bool = False) -> DropIndex:
    index_dir = Path(index_dir) if index_dir is not None else state_dir(Path(data_root))
    return DropIndex(index_dir, Path(drop_root), watch=watch)


def link_store(drop_root: Path, data_root: Path, index_dir: Path | None = None) -> LinkStore:
    """The linked courses of ``drop_root``, kept in its index (:mod:`rt_resources.ingest.link_state`);
    :meth:`LinkStore.update` brings them up to date with the index."""
    return LinkStore(_index(drop_root, data_root, index_dir), load_site_secret(Path(data_root)))


def refresh_drop(
    drop_root: Path,
    data_root: Path,
    now: float | None = None,
    index_dir: Path | None = None,
    full_rescan_s: float = 0.0,
    hot_s: float = 0.0,
    watch: bool = False,
) -> Refresh:
    """Bring the index of ``drop_root`` up to date without loading it or linking courses: the
    sensor's cheap "did anything change?" (compare :attr:`Refresh.token` with the last one seen).
    ``full_rescan_s`` and ``hot_s``: see :meth:`DropIndex.refresh`; ``watch``: this process's
    inotify watch tells which folders changed (a long-lived process: the sensor's)."""
    return _index(drop_root, data_root, index_dir, watch).refresh(now, full_rescan_s, hot_s)


def survey_drop(
    drop_root: Path,
    data_root: Path,
    now: float | None = None,
    index_dir: Path | None = None,
    full_rescan_s: float = 0.0,
    hot_s: float = 0.0,
    refreshed: Refresh | None = None,
) -> DropSurvey:
    """Scan ``drop_root`` incrementally (index kept in ``index_dir``, default the data root's state
    folder: :func:`rt_resources.state.state_dir`) and read its courses, linked again where the drop
    changed (:mod:`rt_resources.ingest.link_state`). Loads every file's row: the sensor reads only
    the courses that changed, through :func:`link_store`.

    By default every file is stat-ed (``full_rescan_s`` 0; see :meth:`DropIndex.refresh`); with
    ``refreshed`` (what :func:`refresh_drop` just returned) the index is not refreshed again."""
    store = link_store(drop_root, data_root, index_dir)
    refresh = refreshed if refreshed is not None else store.index.refresh(now, full_rescan_s, hot_s)
    store.update()
    return DropSurvey(store.index.result(refresh), store.result(), store.state())


def course_readiness(
    survey: DropSurvey, course: Course, quiet_period_s: float, now: float | None = None
) -> tuple[bool, str]:
    """Is the course complete enough to start? ``(ready, why)``: :func:`readiness` with what the
    survey holds."""
    folders = course_folders(course)
    unusable = [e.seen_at for e in survey.scan.entries if not e.ok and str(Path(e.path).parent) in folders]
    return readiness(course.files, survey.scan.complete_dirs, max(unusable, default=None), quiet_period_s, now)


def readiness(
    files: list[FileEntry],
    markers: set[str],
    unusable_changed_at: float | None,
    quiet_period_s: float,
    now: float | None = None,
) -> tuple[bool, str]:
    """Is a course of ``files`` complete enough to start? ``(ready, why)``.

    Ready when every file of the course lies under a folder holding a ``_COMPLETE`` marker
    (``markers``: the folders holding one), or when nothing in the course's folders (its files,
    and files there that cannot be used yet, such as a slice still being copied: the latest seen
    at ``unusable_changed_at``) has changed for ``quiet_period_s`` seconds, as seen by the scans.
    """
    now = time.time() if now is None else now
    if not files:
        return False, "no files (the drop changed while the course was read)"
    if markers and all(any(a in markers for a in iter_ancestors(f.path)) for f in files):
        return True, "_COMPLETE marker"
    changes = [f.seen_at for f in files] + ([unusable_changed_at] if unusable_changed_at is not None else [])
    age = max(0.0, now - max(changes))
    if age >= quiet_period_s:
        return True, f"stable for {age:.0f} s"
    return False, f"last change {age:.0f} s ago; waiting for {quiet_period_s:.0f} s of quiet"


def course_folders(course: Course) -> set[str]:
    """The drop-relative folders holding the course's files."""
    return {str(Path(f.path).parent) for f in course.files}


def courses_table(links: LinkResult) -> pd.DataFrame:
    """One row per course: the key -> patient mapping and what the course holds."""
    rows = [
        {
            "course_key": c.key,
            "patient_id": c.patient_id,
            "patient_name": c.patient_name,
            "ct_study_uid": c.study_uid,
            "ct_series_uid": c.ct_series_uid,
            "frame_of_reference_uid": c.for_uid,
            "n_ct_slices": c.n_ct_slices,
            "n_rtstruct": len(c.struct_uids),
            "n_rtplan": len(c.plan_uids),
            "n_rtdose": len(c.dose_uids),
            "n_reg": len(c.reg_uids),
            "n_files": len(c.files),
            "fingerprint": c.fingerprint,
            "notes": "; ".join(c.notes),
        }
        for c in links.courses
    ]
    return pd.DataFrame(rows, columns=list(rows[0]) if rows else ["course_key", "patient_id"])


def ingest_report_table(links: LinkResult) -> pd.DataFrame:
    """One row per file of the drop that no course uses, with the reason."""
    return pd.DataFrame(
        [{"path": r.path, "reason": r.reason, "kind": r.kind} for r in links.rejections],
        columns=["path", "reason", "kind"],
    )
