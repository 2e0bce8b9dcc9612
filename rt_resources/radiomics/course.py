"""Radiomics of one course: every ROI mask against the course image, as one table."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import pandas as pd

from rt_resources.radiomics.engine import RadiomicsSettings, run_tasks, select_mr_tasks, select_tasks

ID_COLUMNS = ["course_key", "roi_name", "source"]  #: keyed by course key only: no PatientID


def params_sha256(settings: RadiomicsSettings) -> str:
    """sha256 of the parameter file bytes, followed by the light and the MR parameter files'."""
    digest = hashlib.sha256(Path(settings.params).read_bytes())
    if settings.light_params is not None:
        digest.update(Path(settings.light_params).read_bytes())
    digest.update(Path(settings.mr_params).read_bytes())
    return digest.hexdigest()


def course_radiomics(
    image_path: Path,
    masks_root: Path,
    course_key: str,
    settings: RadiomicsSettings,
    workers: int,
    sequential: bool = False,
    mr_root: Path | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Features of every selected ROI under ``masks_root`` (``<source>/*.nii.gz``) on the CT and,
    when ``mr_root`` is given, of every ``mr_root/<label>/masks/<source>/`` ROI on that MR with
    the MR parameters (source ``<label>/<source>``).

    Returns a frame with columns ``course_key, roi_name, source`` followed by
    pyradiomics' own feature names (e.g. ``original_shape_MeshVolume``), one row per ROI that
    succeeded, whichever backend computed them, and a summary ``{n_tasks, n_ok, failures,
    skipped, pyradiomics_version, params_sha256, seconds, backend}``; ``backend`` is
    ``{"setting", "rois"}`` with one record per ROI (``roi_name, source, backend, device,
    fastrad, pyradiomics, cuda_oom``: which classes fastrad computed, which pyradiomics did and
    why, a CUDA out-of-memory fallback to the CPU).
    """
    import radiomics

    start = time.perf_counter()
    tasks, skipped = select_tasks(Path(masks_root), settings)
    if mr_root is not None:
        mr_tasks, mr_skipped = select_mr_tasks(Path(mr_root), settings)
        tasks, skipped = tasks + mr_tasks, skipped + mr_skipped
    records: list[dict[str, Any]] = []
    results, failures = run_tasks(
        Path(image_path), tasks, settings, workers=workers, sequential=sequential, provenance=records
    )
    frame = pd.DataFrame(results)
    if frame.empty:
        frame = pd.DataFrame(columns=["roi_name", "source"])
    frame.insert(0, "course_key", course_key)
    features = [c for c in frame.columns if c not in ID_COLUMNS]
    frame = frame[ID_COLUMNS + features].sort_values(["source", "roi_name"], ignore_index=True)
    # each ROI's own feature names: its parameter file (CT, light CT for BODY, MR) decides them
    shared: dict[tuple[str, ...], tuple[str, ...]] = {}
    own_features = {}
    for row in results:
        names = tuple(sorted(k for k in row if k not in ("roi_name", "source")))
        own_features[(row["source"], row["roi_name"])] = shared.setdefault(names, names)
    summary = {
        "own_features": own_features,
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
        if settings.light_params is not None and settings.params_for(task) == Path(settings.light_params):
            left_out.append(
                {"roi_name": task.roi_name, "source": task.source, "reason": "very large ROI (light parameters)"}
            )
        else:
            chosen[task.roi_name] = task.mask_path
    return chosen, left_out
