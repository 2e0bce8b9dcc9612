"""Radiomics engine: task selection and single-ROI extraction, run in the project's process pool.

The pool (retries, backoff, timeouts, halving on memory errors or killed workers) is
:mod:`rt_resources.parallel`, shared with the other CPU fan-outs. Heavy libraries (numpy,
SimpleITK, pyradiomics) are imported lazily so that a spawned worker limits its BLAS/OpenMP
thread pools *before* they are loaded.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rt_resources.parallel import FaultHook, RetryPolicy, default_workers, run_pool

log = logging.getLogger("rtpipeline.radiomics")

PARAMS_DIR = Path(__file__).resolve().parent / "params"
__all__ = ["PARAMS_DIR", "RadiomicsSettings", "RadiomicsTask", "default_workers", "extract_one", "run_tasks"]


@dataclass(frozen=True)
class RadiomicsTask:
    """One ROI mask to extract features for."""

    roi_name: str
    source: str
    mask_path: Path
    n_voxels: int = 0
    volume_cc: float = 0.0
    image_path: Path | None = None  #: the image this mask belongs to (None: the run's image)
    params: Path | None = None  #: parameter file overriding the settings' (e.g. MR.yaml for MR images)


@dataclass(frozen=True)
class RadiomicsSettings:
    """Extraction settings; ROIs with more than ``max_voxels_full`` voxels, or larger than
    ``max_volume_cc_full`` (about 2 million voxels once resampled to CT.yaml's 1 mm; BODY), use
    ``light_params``."""

    params: Path = PARAMS_DIR / "CT.yaml"
    light_params: Path | None = PARAMS_DIR / "CT_light.yaml"
    mr_params: Path = PARAMS_DIR / "MR.yaml"  #: for masks on MR images (see :func:`select_mr_tasks`)
    min_voxels: int = 10
    max_voxels_full: int = 2_000_000
    max_volume_cc_full: float = 2000.0
    skip_patterns: tuple[str, ...] = ("couch", "support", "table", "immobili")
    timeout_s: float = 600
    attempts: int = 3
    backoff_s: float = 0.5

    def params_for(self, task: RadiomicsTask) -> Path:
        """Parameter file for ``task``: its own if set, the light one for very large ROIs, else ``params``."""
        if task.params is not None:
            return Path(task.params)
        large = task.n_voxels > self.max_voxels_full or task.volume_cc > self.max_volume_cc_full
        if self.light_params is not None and large:
            return Path(self.light_params)
        return Path(self.params)


# --------------------------------------------------------------------------- task selection


def _count_voxels(mask_path: Path) -> tuple[int, float]:
    """Non-zero voxels of a mask and their volume in cc."""
    import numpy as np
    import SimpleITK as sitk

    mask = sitk.ReadImage(str(mask_path))
    n = int(np.count_nonzero(sitk.GetArrayFromImage(mask)))
    return n, n * float(np.prod(mask.GetSpacing())) / 1000.0


def _roi_names(source_dir: Path) -> dict[str, str]:
    """File name -> ROI name from ``rois.json`` (a list of ``{"roi_name", "file"}``), if present."""
    index = source_dir / "rois.json"
    if not index.is_file():
        return {}
    entries = json.loads(index.read_text())
    return {
        Path(e["file"]).name: str(e["roi_name"]) for e in entries if e.get("file")
    }  # ROIs without contours: no file


def select_tasks(
    masks_root: Path, settings: RadiomicsSettings | None = None
) -> tuple[list[RadiomicsTask], list[dict[str, Any]]]:
    """Every ``masks_root/<source>/*.nii.gz`` as a task, minus skipped ones (returned with a reason).

    A mask is skipped when its ROI name matches one of ``skip_patterns`` (case-insensitive
    substring) or when it has fewer than ``min_voxels`` non-zero voxels.
    """
    settings = settings or RadiomicsSettings()
    patterns = [re.compile(re.escape(p), re.IGNORECASE) for p in settings.skip_patterns]
    tasks: list[RadiomicsTask] = []
    skipped: list[dict[str, Any]] = []
    for source_dir in sorted(p for p in Path(masks_root).iterdir() if p.is_dir()):
        names = _roi_names(source_dir)
        for mask_path in sorted(source_dir.glob("*.nii.gz")):
            roi = names.get(mask_path.name, mask_path.name[: -len(".nii.gz")])
            base = {"roi_name": roi, "source": source_dir.name, "file": str(mask_path)}
            hit = next((p.pattern for p in patterns if p.search(roi)), None)
            if hit is not None:
                skipped.append({**base, "reason": f"name matches skip pattern {hit!r}"})
                continue
            n, volume_cc = _count_voxels(mask_path)
            if n < settings.min_voxels:
                skipped.append({**base, "reason": f"{n} voxels < min_voxels={settings.min_voxels}"})
                continue
            tasks.append(RadiomicsTask(roi, source_dir.name, mask_path, n, volume_cc))
    return tasks, skipped


def select_mr_tasks(
    mr_root: Path, settings: RadiomicsSettings | None = None
) -> tuple[list[RadiomicsTask], list[dict[str, Any]]]:
    """Tasks for every ``mr_root/<label>/masks/<source>/*.nii.gz`` on ``mr_root/<label>/image.nii.gz``
    with the MR parameters; their source is ``<label>/<source>`` (e.g. ``mr1/manual``)."""
    settings = settings or RadiomicsSettings()
    tasks: list[RadiomicsTask] = []
    skipped: list[dict[str, Any]] = []
    if not Path(mr_root).is_dir():
        return tasks, skipped
    for folder in sorted(p for p in Path(mr_root).iterdir() if (p / "image.nii.gz").is_file()):
        if not (folder / "masks").is_dir():
            continue
        found, left_out = select_tasks(folder / "masks", settings)
        image = folder / "image.nii.gz"
        tasks += [
            RadiomicsTask(t.roi_name, f"{folder.name}/{t.source}", t.mask_path, t.n_voxels, t.volume_cc, image,
                          Path(settings.mr_params))
            for t in found
        ]  # fmt: skip
        skipped += [{**s, "source": f"{folder.name}/{s['source']}"} for s in left_out]
    return tasks, skipped


# --------------------------------------------------------------------------- extraction

_IMAGE_CACHE: dict[str, Any] = {}
_EXTRACTORS: dict[str, Any] = {}


def _load_image(image_path: Path | str) -> Any:
    """The image as a SimpleITK image, read once per process (cached by path; the last two kept:
    a course's CT and one MR)."""
    key = str(image_path)
    if key not in _IMAGE_CACHE:
        import SimpleITK as sitk

        while len(_IMAGE_CACHE) >= 2:
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = sitk.ReadImage(key)
    return _IMAGE_CACHE[key]


def _extractor(params: Path) -> Any:
    key = str(params)
    if key not in _EXTRACTORS:
        import radiomics
        from radiomics import featureextractor

        radiomics.setVerbosity(logging.ERROR)  # its advice ("GLCM is symmetrical ...") once per ROI is noise
        _EXTRACTORS[key] = featureextractor.RadiomicsFeatureExtractor(key)
    return _EXTRACTORS[key]


def extract_one(image_path: Path | str, task: RadiomicsTask, settings: RadiomicsSettings) -> dict[str, float]:
    """pyradiomics features of one ROI: feature columns only (no ``diagnostics_*``), as floats."""
    import SimpleITK as sitk

    image = _load_image(task.image_path or image_path)
    mask = sitk.ReadImage(str(task.mask_path))
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)  # any non-zero voxel belongs to the ROI (label 1)
    raw = _extractor(settings.params_for(task)).execute(image, mask)
    return {k: float(v) for k, v in raw.items() if not k.startswith("diagnostics_")}


@dataclass(frozen=True)
class _Extract:
    """The pool's work function: features of one task (picklable)."""

    image_path: str
    settings: RadiomicsSettings

    def __call__(self, task: RadiomicsTask) -> dict[str, float]:
        return extract_one(self.image_path, task, self.settings)


def _task_cost(task: RadiomicsTask) -> float:
    return float(task.n_voxels)


def _describe(task: RadiomicsTask) -> str:
    return f"{task.source}/{task.roi_name}"


def run_tasks(
    image_path: Path,
    tasks: Sequence[RadiomicsTask],
    settings: RadiomicsSettings,
    workers: int,
    sequential: bool = False,
    fault_hook: FaultHook | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Extract every task; returns ``(results, failures)`` in task order.

    ``results`` rows are ``{roi_name, source, **features}``; ``failures`` rows are
    ``{roi_name, source, error, attempts}``. Runs in :func:`rt_resources.parallel.run_pool`
    (largest ROI first; each worker reads ``image_path`` once), with ``settings.attempts``
    tries, exponential backoff and ``settings.timeout_s`` per task; ``sequential=True`` runs
    in this process with the same retries. ``fault_hook(task, attempt)`` runs before each
    extraction (tests).
    """
    outcome = run_pool(
        _Extract(str(image_path), settings),
        list(tasks),
        workers=workers,
        policy=RetryPolicy(settings.attempts, settings.backoff_s, settings.timeout_s),
        sequential=sequential,
        initializer=_load_image,
        initargs=(str(image_path),),
        cost=_task_cost,
        describe=_describe,
        label="radiomics",
        fault_hook=fault_hook,
    )
    results = [
        {"roi_name": tasks[i].roi_name, "source": tasks[i].source, **outcome.results[i]}
        for i in sorted(outcome.results)
    ]
    failures = [
        {"roi_name": tasks[i].roi_name, "source": tasks[i].source, **outcome.failures[i]}
        for i in sorted(outcome.failures)
    ]
    return results, failures
