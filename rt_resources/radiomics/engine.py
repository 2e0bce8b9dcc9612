"""Radiomics engine: task selection and single-ROI extraction, run in the project's process pool.

The pool (retries, backoff, timeouts, halving on memory errors or killed workers, sizing by free
memory) is :mod:`rt_resources.parallel`, shared with the other CPU fan-outs. The feature classes
are computed by pyradiomics or fastrad (``RadiomicsSettings.backend``, see
:mod:`rt_resources.radiomics.backends`); preprocessing is pyradiomics' in both cases. Heavy
libraries (numpy, SimpleITK, pyradiomics, torch) are imported lazily so that a spawned worker
limits its BLAS/OpenMP thread pools *before* they are loaded.

Which parameter file an ROI gets (full, basic, light for very large ROIs, MR) is the policy of
:mod:`rt_resources.radiomics.policy` (:meth:`RadiomicsSettings.choose`). Each worker reads and checks
the course image once (:func:`init_worker`); each ROI reads its mask and is extracted on the part
of the image around it (:mod:`rt_resources.radiomics.region`), so a small ROI no longer pays for
passes over the whole CT.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rt_resources.course_paths import mask_source_dirs
from rt_resources.parallel import FaultHook, MemoryPolicy, RetryPolicy, run_pool
from rt_resources.radiomics.policy import (
    DEFAULT_FULL_ROIS,
    DEFAULT_FULL_SOURCES,
    ParamChoice,
    ParamSet,
    RoiPolicy,
    choose_param_set,
)
from rt_resources.structures.masks import mask_index

log = logging.getLogger("rtpipeline.radiomics")

PARAMS_DIR = Path(__file__).resolve().parent / "params"
__all__ = [
    "PARAMS_DIR",
    "RadiomicsInputError",
    "RadiomicsSettings",
    "RadiomicsTask",
    "extract_image",
    "extract_one",
    "extract_one_recorded",
    "init_worker",
    "run_tasks",
]


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
    """Extraction settings. Which parameter file an ROI gets is :meth:`choose`'s: ``mr_params`` (or
    the task's own file) on MR images; ``light_params`` for ROIs with more than
    ``max_voxels_full`` voxels or larger than ``max_volume_cc_full`` (about 2 million voxels once
    resampled to CT.yaml's 1 mm; BODY); else ``params`` or ``basic_params`` as ``policy`` says
    (:mod:`rt_resources.radiomics.policy`)."""

    params: Path = PARAMS_DIR / "CT.yaml"
    #: parameter set "light": very large ROIs (BODY); None: they get the policy's set like the others
    light_params: Path | None = PARAMS_DIR / "CT_light.yaml"
    mr_params: Path = PARAMS_DIR / "MR.yaml"  #: for masks on MR images (see :func:`select_mr_tasks`)
    pet_params: Path = PARAMS_DIR / "PET.yaml"  #: for masks on PET SUV images (see :func:`select_pet_tasks`)
    #: parameter set "basic" (first-order and shape): ROIs the policy leaves out of the full set
    basic_params: Path = PARAMS_DIR / "CT_basic.yaml"
    #: default | full | basic (:class:`RoiPolicy`); full here, so that a caller naming ``params`` gets
    #: that file for every ROI (the API before the policy); the pipeline's settings default to "default"
    policy: str = RoiPolicy.FULL.value
    #: sources whose every ROI gets the full set (default policy)
    full_sources: tuple[str, ...] = DEFAULT_FULL_SOURCES
    #: ROI names or shell patterns, case-insensitive, that get the full set (default policy)
    full_rois: tuple[str, ...] = DEFAULT_FULL_ROIS
    min_voxels: int = 10
    max_voxels_full: int = 2_000_000
    max_volume_cc_full: float = 2000.0
    skip_patterns: tuple[str, ...] = ("couch", "support", "table", "immobili")
    timeout_s: float = 600
    attempts: int = 3
    backoff_s: float = 0.5
    #: which code computes the feature classes: pyradiomics | fastrad | auto (fastrad with a CUDA
    #: device, else pyradiomics); preprocessing is pyradiomics' in every case (see backends.py)
    backend: str = "pyradiomics"
    #: share of the free (GPU or host) memory fastrad's shape matrices may take before pyradiomics does shape
    fastrad_memory_fraction: float = 0.5
    #: a worker's expected peak memory before one is measured (sizes the pool's first wave): the
    #: largest worker in benchmarks/results/radiomics_pool_2core_CT.txt (CT.yaml, a lung) was 1179 MB
    worker_peak_hint_bytes: int = 1_500 * 2**20
    #: extract each ROI on the image cut around it (rt_resources/radiomics/region.py; equal to the
    #: whole image within 1e-6); False: pyradiomics on the whole image, the reference path
    crop_to_roi: bool = True

    def __post_init__(self) -> None:
        from rt_resources.radiomics.backends import parse_backend

        parse_backend(self.backend)  # a ValueError names the choices
        if not 0 < self.fastrad_memory_fraction <= 1:
            raise ValueError(f"fastrad_memory_fraction {self.fastrad_memory_fraction} is not in (0, 1]")
        if self.policy not in tuple(RoiPolicy):
            choices = " | ".join(RoiPolicy)
            raise ValueError(f"radiomics policy {self.policy!r} is not one of {choices}")
        # lists from YAML or run config arrive as lists: keep the settings hashable and picklable
        object.__setattr__(self, "full_sources", tuple(self.full_sources))
        object.__setattr__(self, "full_rois", tuple(self.full_rois))

    def choose(self, task: RadiomicsTask) -> ParamChoice:
        """The parameter set and file of ``task``, and why (:mod:`rt_resources.radiomics.policy`)."""
        if task.params is not None:
            own = Path(task.params)
            if own == Path(self.pet_params):
                return ParamChoice(ParamSet.PET, own, f"PET SUV image: its own parameters ({own.name})")
            return ParamChoice(ParamSet.MR, own, f"MR image: its own parameters ({own.name})")
        very_large = None
        if self.light_params is not None:
            if task.volume_cc > self.max_volume_cc_full:
                very_large = (
                    f"very large ROI ({task.volume_cc:.0f} cc > max_volume_cc_full {self.max_volume_cc_full:g} cc)"
                )
            elif task.n_voxels > self.max_voxels_full:
                very_large = f"very large ROI ({task.n_voxels} voxels > max_voxels_full {self.max_voxels_full})"
        param_set, reason = choose_param_set(
            task.roi_name, task.source, policy=self.policy, full_sources=self.full_sources,
            full_rois=self.full_rois, very_large=very_large,
        )  # fmt: skip
        files = {ParamSet.FULL: self.params, ParamSet.BASIC: self.basic_params, ParamSet.LIGHT: self.light_params}
        return ParamChoice(param_set, Path(files[param_set]), reason)

    def params_for(self, task: RadiomicsTask) -> Path:
        """Parameter file for ``task`` (:meth:`choose`)."""
        return self.choose(task).params


# --------------------------------------------------------------------------- task selection


def _count_voxels(mask_path: Path) -> tuple[int, float]:
    """Non-zero voxels of a mask and their volume in cc."""
    import numpy as np
    import SimpleITK as sitk

    mask = sitk.ReadImage(str(mask_path))
    n = int(np.count_nonzero(sitk.GetArrayFromImage(mask)))
    return n, n * float(np.prod(mask.GetSpacing())) / 1000.0


def _roi_names(source_dir: Path) -> dict[str, str]:
    """File name -> ROI name (``rois.json``'s, else the file's stem)."""
    return {r["file"]: r["roi_name"] for r in mask_index(source_dir)}


def select_tasks(
    masks_root: Path, settings: RadiomicsSettings | None = None, sources: Sequence[str] | None = None
) -> tuple[list[RadiomicsTask], list[dict[str, Any]]]:
    """Every ``masks_root/<source>/*.nii.gz`` (of ``sources`` only, when given) as a task, minus
    skipped ones (returned with a reason).

    A mask is skipped when its ROI name matches one of ``skip_patterns`` (case-insensitive
    substring) or when it has fewer than ``min_voxels`` non-zero voxels.
    """
    settings = settings or RadiomicsSettings()
    patterns = [re.compile(re.escape(p), re.IGNORECASE) for p in settings.skip_patterns]
    tasks: list[RadiomicsTask] = []
    skipped: list[dict[str, Any]] = []
    for source_dir in mask_source_dirs(masks_root).values():
        if sources is not None and source_dir.name not in sources:
            continue
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


def select_image_tasks(
    root: Path, image_name: str, params: Path, settings: RadiomicsSettings | None = None
) -> tuple[list[RadiomicsTask], list[dict[str, Any]]]:
    """Tasks for every ``root/<label>/masks/<source>/*.nii.gz`` on ``root/<label>/<image_name>``
    with the parameter file ``params``; their source is ``<label>/<source>`` (e.g. ``mr1/manual``)."""
    settings = settings or RadiomicsSettings()
    tasks: list[RadiomicsTask] = []
    skipped: list[dict[str, Any]] = []
    if not Path(root).is_dir():
        return tasks, skipped
    for folder in sorted(p for p in Path(root).iterdir() if (p / image_name).is_file()):
        if not (folder / "masks").is_dir():
            continue
        found, left_out = select_tasks(folder / "masks", settings)
        image = folder / image_name
        tasks += [
            RadiomicsTask(t.roi_name, f"{folder.name}/{t.source}", t.mask_path, t.n_voxels, t.volume_cc, image,
                          Path(params))
            for t in found
        ]  # fmt: skip
        skipped += [{**s, "source": f"{folder.name}/{s['source']}"} for s in left_out]
    return tasks, skipped


def select_mr_tasks(
    mr_root: Path, settings: RadiomicsSettings | None = None
) -> tuple[list[RadiomicsTask], list[dict[str, Any]]]:
    """Tasks for every MR's masks (``mr_root/<label>/masks/<source>/``) on ``mr_root/<label>/image.nii.gz``
    with the MR parameters (source ``<label>/<source>``)."""
    settings = settings or RadiomicsSettings()
    return select_image_tasks(mr_root, "image.nii.gz", Path(settings.mr_params), settings)


def select_pet_tasks(
    pet_root: Path, settings: RadiomicsSettings | None = None
) -> tuple[list[RadiomicsTask], list[dict[str, Any]]]:
    """Tasks for the PET's masks (``pet_root/<label>/masks/<source>/``) on its SUVbw image
    (``pet_root/<label>/suv_bw.nii.gz``) with the PET parameters (source ``<label>/<source>``).

    Which ROIs: under the default policy those that get the full CT set (a source in
    ``full_sources``: manual, custom; an organ in ``full_rois``); the ~80 other auto-segmented
    organs (bones, muscles, vessels) are skipped with the reason, their SUV metrics being in
    ``pet_metrics``; every ROI under policy ``full``."""
    settings = settings or RadiomicsSettings()
    tasks, skipped = select_image_tasks(pet_root, "suv_bw.nii.gz", Path(settings.pet_params), settings)
    if RoiPolicy(settings.policy) is RoiPolicy.FULL:
        return tasks, skipped
    kept = []
    for task in tasks:
        param_set, reason = choose_param_set(
            task.roi_name, task.source.split("/", 1)[1], policy=RoiPolicy.DEFAULT,
            full_sources=settings.full_sources, full_rois=settings.full_rois,
        )  # fmt: skip
        if param_set is ParamSet.FULL:
            kept.append(task)
        else:
            entry = {"roi_name": task.roi_name, "source": task.source, "file": str(task.mask_path)}
            skipped.append({**entry, "reason": f"PET radiomics: {reason}"})
    return kept, skipped


# --------------------------------------------------------------------------- extraction


class RadiomicsInputError(ValueError):
    """An image or mask that radiomics cannot use; the message names the file and what to do."""


_IMAGE_CACHE: dict[str, Any] = {}
_NAN_COUNTS: dict[str, int] = {}


def _load_image(image_path: Path | str) -> Any:
    """The image as a SimpleITK image, read once per process (cached by path; the last two kept:
    a course's CT and one MR)."""
    key = str(image_path)
    if key not in _IMAGE_CACHE:
        import SimpleITK as sitk

        while len(_IMAGE_CACHE) >= 2:
            _NAN_COUNTS.pop(next(iter(_IMAGE_CACHE)), None)
            _IMAGE_CACHE.pop(next(iter(_IMAGE_CACHE)))
        _IMAGE_CACHE[key] = sitk.ReadImage(key)
    return _IMAGE_CACHE[key]


def init_worker(image_path: Path | str, params: Sequence[Path | str] = ()) -> None:
    """A pool worker's start: read the course image and count its NaN voxels (once per process,
    not per ROI: :func:`check_inputs` reuses both), and build the extractor and crop rule of each
    parameter file, so that an ROI's CPU time is its own extraction."""
    from rt_resources.radiomics.region import crop_rule_for

    image = _load_image(image_path)
    _nan_count(image, str(image_path))
    for path in params:
        crop_rule_for(path)


def _nan_count(image: Any, cache_key: str | None = None) -> int:
    """NaN voxels of a float image (0 for integer images); cached per image path."""
    import numpy as np
    import SimpleITK as sitk

    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return 0
    if cache_key is not None and cache_key in _NAN_COUNTS:
        return _NAN_COUNTS[cache_key]
    count = int(np.count_nonzero(np.isnan(sitk.GetArrayViewFromImage(image))))
    if cache_key is not None:
        _NAN_COUNTS[cache_key] = count
    return count


def _grid(image: Any) -> str:
    size = "x".join(str(n) for n in image.GetSize())
    spacing = "x".join(f"{s:g}" for s in image.GetSpacing())
    origin = ", ".join(f"{o:.2f}" for o in image.GetOrigin())
    return f"{size} voxels of {spacing} mm at ({origin})"


def check_inputs(image: Any, mask: Any, image_name: str, mask_name: str, image_key: str | None = None) -> None:
    """Raise :class:`RadiomicsInputError` for inputs pyradiomics would reject obscurely or turn into
    NaN features: a mask not on the image's grid (larger than the image, or shifted), an empty or
    one-voxel mask, NaN intensities. ``image_key`` caches the image's NaN count (its path)."""
    import numpy as np
    import SimpleITK as sitk

    same_grid = (
        mask.GetSize() == image.GetSize()
        and np.allclose(mask.GetSpacing(), image.GetSpacing(), rtol=1e-4, atol=0)
        and np.allclose(mask.GetOrigin(), image.GetOrigin(), rtol=0, atol=1e-4 * min(image.GetSpacing()))
        and np.allclose(mask.GetDirection(), image.GetDirection(), rtol=0, atol=1e-4)
    )
    if not same_grid:
        larger = any(m > i for m, i in zip(mask.GetSize(), image.GetSize(), strict=False))
        what = "larger than" if larger else "not on the grid of"
        raise RadiomicsInputError(
            f"mask {mask_name} ({_grid(mask)}) is {what} image {image_name} ({_grid(image)}): a mask must be "
            "written on its image's voxel grid (structure_masks does so for the CT); write it again from its "
            "RTSTRUCT on this image"
        )
    inside = sitk.GetArrayViewFromImage(mask) > 0
    n = int(np.count_nonzero(inside))
    if n < 2:
        raise RadiomicsInputError(
            f"mask {mask_name} has {'no voxel' if n == 0 else 'one voxel'}: shape and texture features are "
            "undefined (pyradiomics refuses such masks); select_tasks skips masks under min_voxels"
        )
    n_nan = _nan_count(image, image_key)
    if n_nan:
        in_roi = int(np.count_nonzero(np.isnan(sitk.GetArrayViewFromImage(image)[inside])))
        raise RadiomicsInputError(
            f"image {image_name} has {n_nan} NaN voxels ({in_roi} inside mask {mask_name}): radiomics needs finite "
            "intensities (resampling and filters spread NaN into the features); replace them where the image "
            "is written (e.g. with the background value)"
        )


def extract_image(
    image: Any,
    mask: Any,
    params: Path | str,
    settings: RadiomicsSettings,
    image_name: str = "image",
    mask_name: str = "mask",
    image_key: str | None = None,
) -> tuple[dict[str, float], dict[str, Any]]:
    """Features of one ROI on SimpleITK images with ``settings.backend``: feature columns only (no
    ``diagnostics_*``, pyradiomics' names, as floats), and the backend record
    (:class:`rt_resources.radiomics.backends.BackendRecord` as a dict). With
    ``settings.crop_to_roi`` pyradiomics sees the image cut around the ROI
    (:mod:`rt_resources.radiomics.region`; equal to the whole image within 1e-6 relative)."""
    import SimpleITK as sitk

    from rt_resources.radiomics.backends import extract_features
    from rt_resources.radiomics.region import crop_rule_for, crop_to_roi

    check_inputs(image, mask, image_name, mask_name, image_key)
    rule = crop_rule_for(params) if settings.crop_to_roi else None
    if rule is not None:  # the image around the ROI, not the whole CT (region.py: same values)
        image, mask = crop_to_roi(image, mask, rule)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)  # any non-zero voxel belongs to the ROI (label 1)
    features, record = extract_features(image, mask, params, settings.backend, settings.fastrad_memory_fraction)
    return features, record.as_dict()


def extract_one_recorded(
    image_path: Path | str, task: RadiomicsTask, settings: RadiomicsSettings
) -> tuple[dict[str, float], dict[str, Any]]:
    """:func:`extract_one` and the ROI's backend record (which classes ran where, and why)."""
    import SimpleITK as sitk

    path = task.image_path or image_path
    image = _load_image(path)
    mask = sitk.ReadImage(str(task.mask_path))
    return extract_image(
        image, mask, settings.params_for(task), settings, str(path), str(task.mask_path), image_key=str(path)
    )


def extract_one(image_path: Path | str, task: RadiomicsTask, settings: RadiomicsSettings) -> dict[str, float]:
    """Features of one ROI (``settings.backend``): feature columns only (no ``diagnostics_*``), as floats."""
    return extract_one_recorded(image_path, task, settings)[0]


@dataclass(frozen=True)
class _Extract:
    """The pool's work function: features, backend record and CPU seconds of one task (picklable)."""

    image_path: str
    settings: RadiomicsSettings

    def __call__(self, task: RadiomicsTask) -> tuple[dict[str, float], dict[str, Any], float]:
        start = time.process_time()
        features, record = extract_one_recorded(self.image_path, task, self.settings)
        return features, record, time.process_time() - start


#: relative cost of a voxel per parameter set, for the pool's costliest-first order (CT.yaml's
#: LoG and wavelet images against first-order and shape on the original image)
_SET_COST = {ParamSet.FULL: 1.0, ParamSet.MR: 1.0, ParamSet.PET: 0.5, ParamSet.LIGHT: 0.2, ParamSet.BASIC: 0.1}


def _describe(task: RadiomicsTask) -> str:
    return f"{task.source}/{task.roi_name}"


def run_tasks(
    image_path: Path,
    tasks: Sequence[RadiomicsTask],
    settings: RadiomicsSettings,
    workers: int,
    sequential: bool = False,
    fault_hook: FaultHook | None = None,
    provenance: list[dict[str, Any]] | None = None,
    cpu_seconds: dict[int, float] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Extract every task; returns ``(results, failures)`` in task order.

    ``results`` rows are ``{roi_name, source, **features}``; ``failures`` rows are
    ``{roi_name, source, error, attempts}``. Runs in :func:`rt_resources.parallel.run_pool`
    (costliest ROI first; each worker reads and checks ``image_path`` once, :func:`init_worker`;
    the pool sized by cores and free memory), with ``settings.attempts`` tries, exponential
    backoff and ``settings.timeout_s`` per task; ``sequential=True`` runs in this process with
    the same retries. ``fault_hook(task, attempt)`` runs before each extraction (tests).
    ``provenance``, when given, receives one ``{roi_name, source, **backend record}`` per result
    (which classes ran on fastrad or pyradiomics, the device, a CUDA out-of-memory fallback);
    ``cpu_seconds``, when given, the CPU seconds (``time.process_time`` in the worker) of each
    task that succeeded, by its index in ``tasks``.
    """
    files = tuple(dict.fromkeys(str(settings.params_for(t)) for t in tasks))
    outcome = run_pool(
        _Extract(str(image_path), settings),
        list(tasks),
        workers=workers,
        policy=RetryPolicy(settings.attempts, settings.backoff_s, settings.timeout_s),
        sequential=sequential,
        initializer=init_worker,
        initargs=(str(image_path), files),
        cost=lambda task: float(task.n_voxels) * _SET_COST[settings.choose(task).param_set],
        describe=_describe,
        label="radiomics",
        fault_hook=fault_hook,
        memory=MemoryPolicy(peak_hint_bytes=settings.worker_peak_hint_bytes),
    )
    results = [
        {"roi_name": tasks[i].roi_name, "source": tasks[i].source, **outcome.results[i][0]}
        for i in sorted(outcome.results)
    ]
    if provenance is not None:
        provenance.extend(
            {"roi_name": tasks[i].roi_name, "source": tasks[i].source, **outcome.results[i][1]}
            for i in sorted(outcome.results)
        )
    if cpu_seconds is not None:
        cpu_seconds.update({i: outcome.results[i][2] for i in sorted(outcome.results)})
    failures = [
        {"roi_name": tasks[i].roi_name, "source": tasks[i].source, **outcome.failures[i]}
        for i in sorted(outcome.failures)
    ]
    return results, failures
