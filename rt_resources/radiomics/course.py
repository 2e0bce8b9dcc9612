"""Radiomics of one course: every ROI mask against the course image, as one table."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from rt_resources.radiomics.engine import (
    RadiomicsSettings,
    RadiomicsTask,
    run_tasks,
    select_mr_tasks,
    select_pet_tasks,
    select_tasks,
)
from rt_resources.radiomics.policy import ParamSet, RoiPolicy

ID_COLUMNS = ["course_key", "roi_name", "source"]  #: keyed by course key only: no PatientID
#: upper bounds (cc) of the ROI size buckets of the core-seconds summary; the last bucket is open
SIZE_BUCKETS_CC = (10.0, 100.0, 1000.0)

log = logging.getLogger("rtpipeline.radiomics")


def params_sha256(settings: RadiomicsSettings) -> str:
    """sha256 of the parameter file bytes, followed by the light, the MR, the PET and (unless the policy is
    full, which does not use it) the basic parameter files'."""
    digest = hashlib.sha256(Path(settings.params).read_bytes())
    if settings.light_params is not None:
        digest.update(Path(settings.light_params).read_bytes())
    digest.update(Path(settings.mr_params).read_bytes())
    digest.update(Path(settings.pet_params).read_bytes())
    if settings.policy != RoiPolicy.FULL:
        digest.update(Path(settings.basic_params).read_bytes())
    return digest.hexdigest()


def size_bucket(volume_cc: float, bounds: Sequence[float] = SIZE_BUCKETS_CC) -> str:
    """The size bucket of an ROI: ``<10 cc``, ``10-100 cc``, ``100-1000 cc``, ``>=1000 cc``."""
    if volume_cc < bounds[0]:
        return f"<{bounds[0]:g} cc"
    for low, high in zip(bounds, bounds[1:], strict=False):
        if volume_cc < high:
            return f"{low:g}-{high:g} cc"
    return f">={bounds[-1]:g} cc"


def core_seconds(rois: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """CPU seconds of the ROIs that were extracted (``cpu_s`` of :func:`course_radiomics`'s
    per-ROI records), in total, by size bucket (:func:`size_bucket`) and by parameter set:
    ``{total_s, by_size: {bucket: {n_rois, cpu_s}}, by_param_set: {set: {n_rois, cpu_s}}}``.
    Every bucket and set is listed, empty ones with zeros, so runs compare key by key."""
    buckets = [size_bucket(v) for v in (0.0, *SIZE_BUCKETS_CC)]
    by_size = {b: {"n_rois": 0, "cpu_s": 0.0} for b in buckets}
    by_set = {s.value: {"n_rois": 0, "cpu_s": 0.0} for s in ParamSet}
    for roi in rois:
        if roi.get("cpu_s") is None:
            continue
        for entry in (by_size[size_bucket(roi["volume_cc"])], by_set[roi["param_set"]]):
            entry["n_rois"] += 1
            entry["cpu_s"] += roi["cpu_s"]
    for entry in (*by_size.values(), *by_set.values()):
        entry["cpu_s"] = round(entry["cpu_s"], 3)
    total = sum(entry["cpu_s"] for entry in by_set.values())
    return {"total_s": round(total, 3), "by_size": by_size, "by_param_set": by_set}


def _setting_block(params: Path) -> dict[str, Any]:
    doc = yaml.safe_load(Path(params).read_text()) or {}
    return dict(doc.get("setting") or {})


def param_warnings(settings: RadiomicsSettings, tasks: Sequence[RadiomicsTask]) -> list[str]:
    """Why some columns would mix values of different preprocessing: the basic parameters'
    ``setting`` block (resampling, bins) differs from the full parameters' while some ROI gets
    the basic set. Its columns then hold, for basic ROIs, values the full set would not give."""
    if not any(settings.choose(t).param_set is ParamSet.BASIC for t in tasks):
        return []
    full, basic = _setting_block(Path(settings.params)), _setting_block(Path(settings.basic_params))
    if full == basic:
        return []
    keys = sorted(k for k in set(full) | set(basic) if full.get(k) != basic.get(k))
    return [
        f"basic parameters {Path(settings.basic_params).name} differ from {Path(settings.params).name} in "
        f"setting {', '.join(keys)}: their first-order and shape values are not the full set's; give "
        "radiomics.basic_params a file with the same setting block"
    ]


def course_radiomics(
    image_path: Path,
    masks_root: Path,
    course_key: str,
    settings: RadiomicsSettings,
    workers: int,
    sequential: bool = False,
    mr_root: Path | None = None,
    pet_root: Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Features of every selected ROI under ``masks_root`` (``<source>/*.nii.gz``) on the CT and,
    when ``mr_root`` is given, of every ``mr_root/<label>/masks/<source>/`` ROI on that MR with
    the MR parameters (source ``<label>/<source>``), and likewise of every ``pet_root/<label>/masks/``
    ROI on that PET's SUVbw image with the PET parameters.

    Returns a frame with columns ``course_key, roi_name, source`` followed by
    pyradiomics' own feature names (e.g. ``original_shape_MeshVolume``), one row per ROI that
    succeeded, whichever backend computed them (a feature an ROI's parameter set does not
    compute is NaN in its row), and a summary ``{own_features, rois, core_seconds, policy,
    param_warnings, n_tasks, n_ok, failures, skipped, pyradiomics_version, params_sha256, seconds,
    backend}``:

    * ``rois``: one record per task: ``roi_name, source, param_set`` (full, basic, light, mr:
      :class:`rt_resources.radiomics.policy.ParamSet`), ``params`` (the file name), ``reason``,
      ``n_voxels``, ``volume_cc`` (on the mask's own grid), ``cpu_s`` (``time.process_time`` of its
      extraction in the worker; None when it failed) and ``ok``;
    * ``core_seconds``: :func:`core_seconds` of those records (by size bucket and parameter set);
    * ``own_features``: ``(source, roi_name)`` -> the features its parameter set computed (the
      QC check counts NaN among these only);
    * ``backend``: ``{"setting", "rois"}`` with one record per ROI (``roi_name, source, backend,
      device, fastrad, pyradiomics, cuda_oom``: which classes fastrad computed, which pyradiomics
      did and why, a CUDA out-of-memory fallback to the CPU).
    """
    import radiomics

    start = time.perf_counter()
    tasks, skipped = select_tasks(Path(masks_root), settings)
    if mr_root is not None:
        mr_tasks, mr_skipped = select_mr_tasks(Path(mr_root), settings)
        tasks, skipped = tasks + mr_tasks, skipped + mr_skipped
    if pet_root is not None:
        pet_tasks, pet_skipped = select_pet_tasks(Path(pet_root), settings)
        tasks, skipped = tasks + pet_tasks, skipped + pet_skipped
    records: list[dict[str, Any]] = []
    cpu: dict[int, float] = {}
    results, failures = run_tasks(
        Path(image_path), tasks, settings, workers=workers, sequential=sequential, provenance=records, cpu_seconds=cpu
    )
    rois = []
    for i, task in enumerate(tasks):
        choice = settings.choose(task)
        rois.append(
            {
                "roi_name": task.roi_name,
                "source": task.source,
                "param_set": choice.param_set.value,
                "params": choice.params.name,
                "reason": choice.reason,
                "n_voxels": task.n_voxels,
                "volume_cc": round(task.volume_cc, 3),
                "cpu_s": round(cpu[i], 3) if i in cpu else None,
                "ok": i in cpu,
            }
        )
    warnings = param_warnings(settings, tasks)
    for warning in warnings:
        log.warning("radiomics %s: %s", course_key, warning)
    frame = pd.DataFrame(results)
    if frame.empty:
        frame = pd.DataFrame(columns=["roi_name", "source"])
    frame.insert(0, "course_key", course_key)
    features = [c for c in frame.columns if c not in ID_COLUMNS]
    frame = frame[ID_COLUMNS + features].sort_values(["source", "roi_name"], ignore_index=True)
    # each ROI's own feature names: its parameter set (full, basic, light for BODY, MR) decides them
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    own_features = {}
    for row in results:
        names = tuple(sorted(k for k in row if k not in ("roi_name", "source")))
        own_features[(row["source"], row["roi_name"])] = shared.setdefault(names, names)
    summary = {
        "own_features": own_features,
        "rois": rois,
        "core_seconds": core_seconds(rois),
        "policy": settings.policy,
        "param_warnings": warnings,
        "n_tasks": len(tasks),
        "n_ok": len(results),
        "failures": failures,
        "skipped": skipped,
        "pyradiomics_version": str(radiomics.__version__),
        "params_sha256": params_sha256(settings),
        "seconds": round(time.perf_counter() - start, 3),
        "backend": {"setting": settings.backend, "rois": records},
    }
    return frame, summary


def robustness_rois(source_dir: Path, settings: RadiomicsSettings) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """The ROIs of one mask source (``masks/manual``) whose robustness is worth measuring: those
    radiomics selects (no couch or support, not tiny), minus the very large ones that get the
    light parameters (BODY: its features are not the ones studied, and N perturbations of it cost
    most of the time). Returns ``({roi name: mask path}, left out with the reason)``."""
    source_dir = Path(source_dir)
    if not source_dir.is_dir():
        return {}, []
    tasks, left_out = select_tasks(source_dir.parent, settings, sources=[source_dir.name])
    chosen: dict[str, Path] = {}
    for task in tasks:
        if settings.choose(task).param_set is ParamSet.LIGHT:
            left_out.append(
                {"roi_name": task.roi_name, "source": task.source, "reason": "very large ROI (light parameters)"}
            )
        else:
            chosen[task.roi_name] = task.mask_path
    return chosen, left_out
