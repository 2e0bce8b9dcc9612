"""DVH tables of one course: contour-based for the RTSTRUCT, mask-based for every mask source."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from rt_resources.dvh.metrics import DVH, curve, metrics_row
from rt_resources.dvh.sampling import DoseSampler, contour_dvh, mask_dvh
from rt_resources.structures.masks import ROI_INDEX_FILE
from rt_resources.structures.rtstruct import ROI

ID_COLUMNS = ["course_key", "patient_id", "roi_name", "source", "method"]


def _rows(ids: dict, dvh: DVH, prescription_gy: float | None) -> tuple[dict, pd.DataFrame]:
    doses, volumes = curve(dvh)
    curve_df = pd.DataFrame(
        {**{k: ids[k] for k in ("course_key", "roi_name", "source")}, "dose_gy": doses, "volume_cc": volumes}
    )
    curve_df["volume_pct"] = 100.0 * volumes / dvh.volume_cc
    return {**ids, **metrics_row(dvh, prescription_gy)}, curve_df


def course_dvh(
    course_key: str,
    patient_id: str,
    dose_image,
    rois: list[ROI],
    masks_root: Path,
    prescription_gy: float | None,
    single_plane_mm: float,
) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """``(metrics, curves, notes)`` for the contoured ROIs and every ``masks/<source>/`` except manual."""
    import SimpleITK as sitk

    sampler = DoseSampler(dose_image)
    rows, curves, notes = [], [], []
    for roi in rois:
        if roi.empty:
            notes.append(f"{roi.name!r}: no contours, no DVH")
            continue
        ids = dict(course_key=course_key, patient_id=patient_id, roi_name=roi.name, source="manual", method="contour")
        row, c = _rows(ids, contour_dvh(roi.contours, sampler, single_plane_mm), prescription_gy)
        rows.append(row)
        curves.append(c)
    for folder in sorted(p for p in Path(masks_root).glob("*") if p.is_dir() and p.name != "manual"):
        index = folder / ROI_INDEX_FILE
        names = {r["file"]: r["roi_name"] for r in json.loads(index.read_text())} if index.exists() else {}
        for path in sorted(folder.glob("*.nii.gz")):
            roi_name = names.get(path.name, path.name[: -len(".nii.gz")])
            try:
                dvh = mask_dvh(sitk.ReadImage(str(path)), sampler)
            except ValueError as exc:
                notes.append(f"{folder.name}/{path.name}: {exc}, no DVH")
                continue
            ids = dict(course_key=course_key, patient_id=patient_id, roi_name=roi_name, source=folder.name,
                       method="mask")  # fmt: skip
            row, c = _rows(ids, dvh, prescription_gy)
            rows.append(row)
            curves.append(c)
    metrics = order_dose_columns(pd.DataFrame(rows))
    curves_df = pd.concat(curves, ignore_index=True) if curves else pd.DataFrame(columns=["course_key", "roi_name"])
    return metrics, curves_df, notes


def order_dose_columns(metrics: pd.DataFrame) -> pd.DataFrame:
    """``v<N>gy_pct`` columns last, in dose order, 0 % where missing (above an ROI's max dose)."""
    vcols = sorted((c for c in metrics.columns if c[:1] == "v" and c[1:-6].isdigit() and c.endswith("gy_pct")),
                   key=lambda c: int(c[1:-6]))  # fmt: skip
    metrics = metrics[[c for c in metrics.columns if c not in vcols] + vcols].copy()
    metrics[vcols] = metrics[vcols].fillna(0.0)
    return metrics


def summary_table(metrics: pd.DataFrame, n: int = 30) -> str:
    """A markdown preview without patient identifiers."""
    cols = ["roi_name", "source", "volume_cc", "mean_gy", "d95_gy", "d2_gy", "max_gy"]
    view = metrics[[c for c in cols if c in metrics.columns]].head(n).copy()
    return view.round(3).to_markdown(index=False) if len(view) else "no ROI with a DVH"
