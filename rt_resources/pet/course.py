"""The PET series of one course as SUV volumes, and the SUV metrics of every ROI on them.

A PET belongs to a course when the linker attached it: the planning CT's frame of reference (a
PET/CT) or a REG registering the two. For each PET series, ``courses/<key>/pet/<label>/`` holds
(``label`` = ``pet1``, ``pet2``, ... in series UID order):

* ``suv_bw.nii.gz``: SUVbw (g/ml) on the PET's own grid (float32), when the headers allow it
  (:mod:`rt_resources.pet.suv`: the QIBA pseudo-code); ``suv_bw_on_ct.nii.gz``: the same resampled
  onto the planning CT's grid (linear, 0 outside the PET's field of view), for overlays;
* ``activity_bqml.nii.gz``: the activity concentration (Bq/ml) on the PET grid, when known (BQML,
  or Philips' activity factor), also when SUV is not (a missing PatientWeight): nothing that is not
  SUV is ever written as SUV;
* ``info.json``: series, frame of reference, registration, grid, Units, and the SUV record
  (factor per slice, the inputs with their units, the branches of the pseudo-code taken), or why
  there is no SUV;
* ``masks/<source>/<roi>.nii.gz`` + ``rois.json``: every mask of the course (manual, automatic,
  custom) mapped onto the PET grid, nearest neighbour, through the CT -> PET matrix (written by
  ``pet_metrics`` for a series with SUV; PET radiomics reads them).

SUV metrics are computed on the PET's own voxels (never on interpolated values: the reading of
QIBA and PERCIST), with each ROI mapped onto that grid.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rt_resources.course_paths import CoursePaths
from rt_resources.dicom.sop_classes import Kind
from rt_resources.fileio import remove_dirs_except, replace_dir_atomic, write_json_atomic
from rt_resources.imaging.image_header import read_image_header
from rt_resources.imaging.mr_course import ct_to_mr_matrix
from rt_resources.imaging.mr_series import masks_on_mr
from rt_resources.imaging.registration import sitk_transform
from rt_resources.ingest.manifest import Manifest, source_files
from rt_resources.pet.metrics import METRIC_NAMES, suv_metrics
from rt_resources.pet.series import PETSeriesError, read_pet_series
from rt_resources.pet.suv import PetScale, SUVError, pet_scale
from rt_resources.structures.masks import ROI_INDEX_FILE, mask_index

SUV_BW = "suv_bw.nii.gz"
SUV_BW_ON_CT = "suv_bw_on_ct.nii.gz"
ACTIVITY = "activity_bqml.nii.gz"
INFO = "info.json"
METRIC_COLUMNS = [*METRIC_NAMES, "suvlbm_max", "suvlbm_mean", "suvlbm_peak"]
#: an ROI less than this share inside the PET's field of view gets a note (its metrics cover the part seen)
IN_VIEW_WARN = 0.95
ID_COLUMNS = ["course_key", "pet", "roi_name", "source"]


def pet_series_of(manifest: Manifest) -> list[str]:
    """Series UIDs of the course's PET images, in a stable order."""
    return sorted({f.series_uid for f in manifest.of_kind(Kind.PT)})


def _per_slice(values: np.ndarray, factors: list[float]) -> np.ndarray:
    return values * np.asarray(factors, dtype=np.float64)[:, None, None]


def _scale_record(scale: PetScale) -> dict[str, Any]:
    record = scale.to_json()
    return {
        "units": scale.units,
        "has_suv": scale.has_suv,
        "suv_reason": scale.suv_bw_reason,
        "bqml_reason": scale.bqml_reason,
        "suv_lbm_reason": scale.suv_lbm_reason,
        "lbm_over_weight": _lbm_ratio(scale),
        "scale": record,
    }


def _lbm_ratio(scale: PetScale) -> float | None:
    """LBM / body weight (SUVlbm = SUVbw * this), or None."""
    if not scale.suv_lbm_factors or not scale.has_suv:
        return None
    bw = scale.slices[0].suv_bw_factor
    return float(scale.suv_lbm_factors[0] / bw) if bw else None


def course_pet_images(manifest: Manifest, paths: CoursePaths) -> tuple[list[dict], dict[str, str]]:
    """Write ``pet/<label>/`` for every PET series of the course.

    Returns ``(records, refused)``: one record per series written (its ``info.json``), and the
    series that could not be used at all (unreadable, unregistered, no quantitative Units) by
    series UID with the reason. A series without SUV but with activity concentration is written,
    with ``has_suv`` False and the reason in its record.
    """
    import SimpleITK as sitk

    ct = read_image_header(paths.ct) if paths.ct.exists() else None  # the grid only: no voxels read
    records: list[dict] = []
    refused: dict[str, str] = {}
    for n, series_uid in enumerate(pet_series_of(manifest), start=1):
        label = f"pet{n}"
        try:
            files = source_files(manifest, Kind.PT, series_uid)
            pet_for = files[0].frame_of_reference_uid
            matrix, via = ct_to_mr_matrix(manifest, pet_for, "PET")
            volume = read_pet_series([f.abspath for f in files])
            relative = {Path(f.abspath): f.path for f in files}
            headers = zip(volume.headers, volume.paths, strict=True)
            by_header = {id(h): relative.get(Path(p), Path(p).name) for h, p in headers}
            scale = pet_scale(volume.headers, path_of=lambda ds, b=by_header: b.get(id(ds), str(ds.SOPInstanceUID)))
        except (PETSeriesError, SUVError, ValueError) as exc:
            refused[series_uid] = f"PET series {series_uid}: {exc}"
            continue
        if not scale.has_suv and scale.bqml_reason:
            refused[series_uid] = (
                f"PET series {series_uid}: no SUV ({scale.suv_bw_reason}) and no activity concentration "
                f"({scale.bqml_reason})"
            )
            continue
        image = volume.image()
        record = {
            "label": label,
            "series_uid": series_uid,
            "frame_of_reference_uid": pet_for,
            "n_slices": len(files),
            "size": list(image.GetSize()),
            "spacing_mm": [round(v, 4) for v in image.GetSpacing()],
            "registration": via,
            "ct_to_pet": np.round(matrix, 9).tolist(),
            **_scale_record(scale),
        }

        def write(folder: Path, volume=volume, scale=scale, matrix=matrix, record=record) -> None:
            if scale.has_suv:
                suv = volume.image(_per_slice(volume.values, [s.suv_bw_factor for s in scale.slices]))
                sitk.WriteImage(suv, str(folder / SUV_BW), True)
                if ct is not None:
                    on_ct = sitk.Resample(
                        suv, ct.GetSize(), sitk_transform(matrix), sitk.sitkLinear, ct.GetOrigin(), ct.GetSpacing(),
                        ct.GetDirection(), 0.0, sitk.sitkFloat32,
                    )  # fmt: skip
                    sitk.WriteImage(on_ct, str(folder / SUV_BW_ON_CT), True)
            if all(s.bqml_factor is not None for s in scale.slices):
                activity = volume.image(_per_slice(volume.values, [s.bqml_factor for s in scale.slices]))
                sitk.WriteImage(activity, str(folder / ACTIVITY), True)
            write_json_atomic(folder / INFO, record)

        replace_dir_atomic(paths.pet / label, write)
        records.append(record)
    remove_dirs_except(paths.pet, "pet*", {r["label"] for r in records})
    return records, refused


def pet_records(paths: CoursePaths) -> list[dict]:
    """The ``info.json`` of every PET series written for the course (label order)."""
    if not paths.pet.is_dir():
        return []
    return [json.loads((d / INFO).read_text()) for d in sorted(paths.pet.glob("pet*")) if (d / INFO).is_file()]


def map_masks_to_pet(
    paths: CoursePaths, record: dict, reference: Any, on_mask: Callable[[dict, np.ndarray], None] | None = None
) -> list[dict]:
    """Write every mask of the course onto the grid of PET ``record`` (``reference``: its SUV image,
    as read by the caller; ``pet/<label>/masks/``); returns ``{source, roi_name, file, voxels,
    in_view_fraction}`` per mask written. ``on_mask(entry, array)`` sees each mapped mask ((z, y, x)
    bool) as it is written, so no mask is read back."""
    import SimpleITK as sitk

    folder = paths.pet / record["label"]
    matrix = np.asarray(record["ct_to_pet"], dtype=float)
    written: list[dict] = []

    def write(masks_dir: Path) -> None:
        for source, source_dir in paths.mask_sources().items():
            out = masks_dir / source
            out.mkdir(parents=True)
            index = []
            for roi in mask_index(source_dir):
                on_ct = sitk.ReadImage(str(source_dir / roi["file"]))
                mask = masks_on_mr(on_ct, reference, matrix)
                sitk.WriteImage(mask, str(out / roi["file"]), True)
                array = sitk.GetArrayFromImage(mask).astype(bool)
                voxels = int(array.sum())
                ct_cc = float(np.count_nonzero(sitk.GetArrayViewFromImage(on_ct))) * np.prod(on_ct.GetSpacing()) / 1000
                pet_cc = voxels * float(np.prod(reference.GetSpacing())) / 1000
                index.append(
                    {
                        "roi_name": roi["roi_name"],
                        "file": roi["file"],
                        "voxels": voxels,
                        # the share of the ROI the PET sees (its axial field of view may cut it)
                        "in_view_fraction": round(min(pet_cc / ct_cc, 1.0), 4) if ct_cc else 0.0,
                    }
                )
                written.append({"source": source, **index[-1]})
                if on_mask is not None:
                    on_mask(written[-1], array)
            write_json_atomic(out / ROI_INDEX_FILE, index)

    replace_dir_atomic(folder / "masks", write)
    return written


def course_pet_metrics(paths: CoursePaths, course_key: str) -> tuple[pd.DataFrame, list[str]]:
    """SUV metrics of every ROI of every PET series with SUV (the masks mapped onto each PET grid
    first); returns the table and notes (series without SUV, ROIs outside the PET's view)."""
    import SimpleITK as sitk

    rows: list[dict] = []
    notes: list[str] = []
    for record in pet_records(paths):
        if not record["has_suv"]:
            notes.append(f"{record['label']}: no SUV ({record['suv_reason']}); no SUV metrics")
            continue
        image = sitk.ReadImage(str(paths.pet / record["label"] / SUV_BW))
        suv = sitk.GetArrayFromImage(image).astype(np.float64)
        ratio = record.get("lbm_over_weight")

        def measure(m: dict, mask: np.ndarray, label=record["label"], suv=suv, image=image, ratio=ratio) -> None:
            metrics = suv_metrics(suv, mask, image.GetSpacing())
            if m["in_view_fraction"] < IN_VIEW_WARN:
                notes.append(
                    f"{label}: {m['source']}/{m['roi_name']}: {m['in_view_fraction']:.0%} of it in the PET's field of "
                    "view (its SUV metrics cover that part only)"
                )
            lbm = {f"suvlbm_{k}": metrics[f"suv_{k}"] * ratio if ratio else np.nan for k in ("max", "mean", "peak")}
            rows.append(
                {
                    "course_key": course_key,
                    "pet": label,
                    "roi_name": m["roi_name"],
                    "source": m["source"],
                    **{k: float(metrics[k]) for k in METRIC_COLUMNS if k in metrics},
                    **lbm,
                    "in_view_fraction": m["in_view_fraction"],
                }
            )

        map_masks_to_pet(paths, record, image, measure)
    table = pd.DataFrame(rows, columns=[*ID_COLUMNS, *METRIC_COLUMNS, "in_view_fraction"])
    return table, notes
