"""DVH tables of one course: contour-based for the RTSTRUCT, mask-based for every mask source."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from rt_resources.course_paths import MANUAL, mask_source_dirs
from rt_resources.dvh.metrics import DVH, curve, metrics_row
from rt_resources.dvh.sampling import DoseSampler, contour_dvh, mask_dvh
from rt_resources.parallel import RetryPolicy, run_pool
from rt_resources.structures.masks import ROI_INDEX_FILE
from rt_resources.structures.rtstruct import ROI

ID_COLUMNS = ["course_key", "roi_name", "source", "method"]  #: keyed by course key only: no PatientID


def _rows(ids: dict, dvh: DVH, prescription_gy: float | None) -> tuple[dict, pd.DataFrame]:
    doses, volumes = curve(dvh)
    curve_df = pd.DataFrame(
        {**{k: ids[k] for k in ("course_key", "roi_name", "source")}, "dose_gy": doses, "volume_cc": volumes}
    )
    curve_df["volume_pct"] = 100.0 * volumes / dvh.volume_cc
    return {**ids, **metrics_row(dvh, prescription_gy)}, curve_df


#: below this many ROIs a course's DVHs run in process: spawning workers costs more than it saves
MIN_ROIS_FOR_POOL = 16

_SAMPLER: dict[str, DoseSampler] = {}


def _sampler(dose_path: str) -> DoseSampler:
    """The dose grid of ``dose_path``, read once per process."""
    if dose_path not in _SAMPLER:
        import SimpleITK as sitk

        _SAMPLER.clear()
        _SAMPLER[dose_path] = DoseSampler(sitk.ReadImage(dose_path, sitk.sitkFloat64))
    return _SAMPLER[dose_path]


@dataclass(frozen=True)
class DvhTask:
    """One DVH to compute: a contoured ROI (``roi`` set) or a mask file (``mask_path`` set)."""

    roi_name: str
    source: str
    roi: ROI | None = None
    mask_path: str | None = None
    cost: float = 0.0


@dataclass(frozen=True)
class _DvhWork:
    """The pool's work function for one :class:`DvhTask` (picklable)."""

    dose_path: str
    single_plane_mm: float

    def __call__(self, task: DvhTask) -> DVH:
        import SimpleITK as sitk

        sampler = _sampler(self.dose_path)
        if task.roi is not None:
            return contour_dvh(task.roi.contours, sampler, self.single_plane_mm)
        return mask_dvh(sitk.ReadImage(task.mask_path), sampler)


def dvh_tasks(rois: list[ROI], masks_root: Path) -> tuple[list[DvhTask], list[str]]:
    """Contour DVHs for the contoured ROIs, mask DVHs for every ``masks/<source>/`` except manual."""
    tasks, notes = [], []
    for roi in rois:
        if roi.empty:
            notes.append(f"{roi.name!r}: no contours, no DVH")
            continue
        cost = float(sum(len(c) for c in roi.contours))
        tasks.append(DvhTask(roi.name, MANUAL, roi=roi, cost=cost))
    for folder in (p for name, p in mask_source_dirs(masks_root).items() if name != MANUAL):
        index = folder / ROI_INDEX_FILE
        names = {r["file"]: r["roi_name"] for r in json.loads(index.read_text())} if index.exists() else {}
        for path in sorted(folder.glob("*.nii.gz")):
            roi_name = names.get(path.name, path.name[: -len(".nii.gz")])
            tasks.append(DvhTask(roi_name, folder.name, mask_path=str(path), cost=float(path.stat().st_size)))
    return tasks, notes


def course_dvh(
    course_key: str,
    dose_path: Path,
    rois: list[ROI],
    masks_root: Path,
    prescription_gy: float | None,
    single_plane_mm: float,
    workers: int = 1,
    select: Callable[[DvhTask], bool] | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(metrics, curves, notes)`` for the contoured ROIs and every ``masks/<source>/`` except manual.

    With ``workers > 1`` and at least ``MIN_ROIS_FOR_POOL`` ROIs, the ROIs are spread over the
    project's process pool (:func:`rt_resources.parallel.run_pool`: largest first, the dose read
    once per worker, retries); otherwise they run in this process. A ROI whose DVH fails is
    left out with the error in ``notes``.
    """
    tasks, notes = dvh_tasks(rois, masks_root)
    if select is not None:
        tasks = [t for t in tasks if select(t)]
    work = _DvhWork(str(dose_path), float(single_plane_mm))
    outcome = run_pool(
        work,
        tasks,
        workers=workers,
        sequential=workers <= 1 or len(tasks) < MIN_ROIS_FOR_POOL,
        policy=RetryPolicy(attempts=2, backoff_s=0.1),
        initializer=_sampler,
        initargs=(str(dose_path),),
        cost=lambda t: t.cost,
        describe=lambda t: f"{t.source}/{t.roi_name}",
        label="dvh",
    )
    rows, curves = [], []
    for i, task in enumerate(tasks):
        if i in outcome.failures:
            notes.append(f"{task.source}/{task.roi_name}: {outcome.failures[i]['error']}, no DVH")
            continue
        method = "contour" if task.roi is not None else "mask"
        ids = dict(course_key=course_key, roi_name=task.roi_name, source=task.source, method=method)
        row, c = _rows(ids, outcome.results[i], prescription_gy)
        rows.append(row)
        curves.append(c)
    metrics = order_dose_columns(pd.DataFrame(rows))
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["course_key", "roi_name"])
    return metrics, curves_df, notes


def order_dose_columns(metrics: pd.DataFrame) -> pd.DataFrame:
    """``v<N>gy_pct`` columns last, in dose order, 0 % where missing (above an ROI's max dose)."""
    vcols = sorted(
        (c for c in metrics.columns if c[:1] == "v" and c[1:-6].isdigit() and c.endswith("gy_pct")),
        key=lambda c: int(c[1:-6]),
    )
    metrics = metrics[[c for c in metrics.columns if c not in vcols] + vcols].copy()
    metrics[vcols] = metrics[vcols].fillna(0.0)
    return metrics


def summary_table(metrics: pd.DataFrame, n: int = 30) -> str:
    """A markdown preview without patient identifiers."""
    cols = ["roi_name", "source", "volume_cc", "mean_gy", "d95_gy", "d2_gy", "max_gy"]
    view = metrics[[c for c in cols if c in metrics.columns]].head(n).copy()
    return view.round(3).to_markdown(index=False) if len(view) else "no ROI with a DVH"
