"""Radiomics engine: task selection, single-ROI extraction and a resilient process pool.

Heavy libraries (numpy, SimpleITK, pyradiomics) are imported lazily so that a spawned worker can
limit its BLAS/OpenMP thread pools *before* they are loaded (see :func:`_init_worker`).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import re
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("rtpipeline.radiomics")

PARAMS_DIR = Path(__file__).resolve().parent / "params"
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

FaultHook = Callable[["RadiomicsTask", int], None]


@dataclass(frozen=True)
class RadiomicsTask:
    """One ROI mask to extract features for."""

    roi_name: str
    source: str
    mask_path: Path
    n_voxels: int = 0
    volume_cc: float = 0.0


@dataclass(frozen=True)
class RadiomicsSettings:
    """Extraction settings; ROIs with more than ``max_voxels_full`` voxels, or larger than
    ``max_volume_cc_full`` (about 2 million voxels once resampled to CT.yaml's 1 mm; BODY), use
    ``light_params``."""

    params: Path = PARAMS_DIR / "CT.yaml"
    light_params: Path | None = PARAMS_DIR / "CT_light.yaml"
    min_voxels: int = 10
    max_voxels_full: int = 2_000_000
    max_volume_cc_full: float = 2000.0
    skip_patterns: tuple[str, ...] = ("couch", "support", "table", "immobili")
    timeout_s: float = 600
    attempts: int = 3
    backoff_s: float = 0.5

    def params_for(self, task: RadiomicsTask) -> Path:
        """Parameter file for ``task``: the light one for very large ROIs, when configured."""
        large = task.n_voxels > self.max_voxels_full or task.volume_cc > self.max_volume_cc_full
        if self.light_params is not None and large:
            return Path(self.light_params)
        return Path(self.params)


@dataclass
class _State:
    """Bookkeeping of one ``run_tasks`` call."""

    attempts: dict[int, int] = field(default_factory=dict)
    ready_at: dict[int, float] = field(default_factory=dict)
    queue: list[int] = field(default_factory=list)
    results: dict[int, dict[str, float]] = field(default_factory=dict)
    failures: dict[int, dict[str, Any]] = field(default_factory=dict)


def default_workers() -> int:
    """Number of worker processes to use by default: all cores but one, at least 1."""
    return max(1, (os.cpu_count() or 1) - 1)


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


# --------------------------------------------------------------------------- extraction

_IMAGE_CACHE: dict[str, Any] = {}
_EXTRACTORS: dict[str, Any] = {}


def _load_image(image_path: Path | str) -> Any:
    """The image as a SimpleITK image, read once per process (cached by path)."""
    key = str(image_path)
    if key not in _IMAGE_CACHE:
        import SimpleITK as sitk

        _IMAGE_CACHE.clear()  # one image per process at a time
        _IMAGE_CACHE[key] = sitk.ReadImage(key)
    return _IMAGE_CACHE[key]


def _extractor(params: Path) -> Any:
    key = str(params)
    if key not in _EXTRACTORS:
        from radiomics import featureextractor

        _EXTRACTORS[key] = featureextractor.RadiomicsFeatureExtractor(key)
    return _EXTRACTORS[key]


def extract_one(image_path: Path | str, task: RadiomicsTask, settings: RadiomicsSettings) -> dict[str, float]:
    """pyradiomics features of one ROI: feature columns only (no ``diagnostics_*``), as floats."""
    import SimpleITK as sitk

    image = _load_image(image_path)
    mask = sitk.ReadImage(str(task.mask_path))
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)  # any non-zero voxel belongs to the ROI (label 1)
    raw = _extractor(settings.params_for(task)).execute(image, mask)
    return {k: float(v) for k, v in raw.items() if not k.startswith("diagnostics_")}


def _init_worker(image_path: str) -> None:
    """Pool initializer: one thread per worker for BLAS/OpenMP/ITK, then read the image once."""
    for var in THREAD_ENV_VARS:
        os.environ[var] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl is optional
        pass
    import SimpleITK as sitk

    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    _load_image(image_path)


def _work(
    image_path: str, task: RadiomicsTask, settings: RadiomicsSettings, attempt: int, fault_hook: FaultHook | None
) -> dict[str, float]:
    """Worker entry point: run the fault hook (tests), then extract."""
    if fault_hook is not None:
        fault_hook(task, attempt)
    return extract_one(image_path, task, settings)


# --------------------------------------------------------------------------- the pool


def _charge(state: _State, idx: int, task: RadiomicsTask, error: BaseException, settings: RadiomicsSettings) -> None:
    """Count one failed attempt of task ``idx``: requeue it after a backoff, or record the failure."""
    n = state.attempts[idx] = state.attempts.get(idx, 0) + 1
    message = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    if n >= settings.attempts:
        state.failures[idx] = {"roi_name": task.roi_name, "source": task.source, "error": message, "attempts": n}
        log.warning("radiomics %s/%s failed after %d attempts: %s", task.source, task.roi_name, n, message)
        return
    delay = settings.backoff_s * 2 ** (n - 1)
    log.info("radiomics %s/%s attempt %d failed (%s); retry in %.2fs", task.source, task.roi_name, n, message, delay)
    state.ready_at[idx] = time.monotonic() + delay
    state.queue.append(idx)


def _run_sequential(
    image_path: Path, tasks: Sequence[RadiomicsTask], settings: RadiomicsSettings, fault_hook: FaultHook | None
) -> _State:
    state = _State()
    for idx, task in enumerate(tasks):
        state.queue.append(idx)
        while state.queue:
            state.queue.pop()
            time.sleep(max(0.0, state.ready_at.get(idx, 0.0) - time.monotonic()))
            try:
                state.results[idx] = _work(str(image_path), task, settings, state.attempts.get(idx, 0) + 1, fault_hook)
            except Exception as exc:  # noqa: BLE001 - every error is retried, then recorded
                _charge(state, idx, task, exc, settings)
    return state


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Shut ``pool`` down without waiting on hung or doomed tasks: kill its workers first."""
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public API in 3.11
        if proc.is_alive():
            proc.kill()
    pool.shutdown(wait=True, cancel_futures=True)


def _run_pool(
    image_path: Path,
    tasks: Sequence[RadiomicsTask],
    settings: RadiomicsSettings,
    workers: int,
    fault_hook: FaultHook | None,
) -> _State:
    state = _State(queue=list(range(len(tasks))))
    ctx = multiprocessing.get_context("spawn")
    while state.queue:
        pool = ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(str(image_path),)
        )
        inflight: dict[Future[dict[str, float]], tuple[int, float]] = {}
        degrade: str | None = None
        while (state.queue or inflight) and degrade is None:
            now = time.monotonic()
            # Submit ready tasks, never more than `workers` at a time, so submit time ~ start time
            # and the per-task deadline is meaningful.
            for idx in sorted(state.queue, key=lambda i: state.ready_at.get(i, 0.0)):
                if len(inflight) >= workers or state.ready_at.get(idx, 0.0) > now:
                    break
                state.queue.remove(idx)
                attempt = state.attempts.get(idx, 0) + 1
                fut = pool.submit(_work, str(image_path), tasks[idx], settings, attempt, fault_hook)
                inflight[fut] = (idx, now + settings.timeout_s)
            wake = [d for _, d in inflight.values()]
            if len(inflight) < workers:
                wake += [state.ready_at.get(i, now) for i in state.queue]
            timeout = max(0.0, min(wake) - now) if wake else 0.0
            if not inflight:
                time.sleep(timeout)
                continue
            done, _ = wait(inflight, timeout=timeout, return_when=FIRST_COMPLETED)
            for fut in done:
                idx, _deadline = inflight.pop(fut)
                try:
                    state.results[idx] = fut.result()
                except BrokenProcessPool as exc:  # a worker died (killed, segfault, OOM killer)
                    _charge(state, idx, tasks[idx], exc, settings)
                    degrade = "a worker process died"
                except MemoryError as exc:
                    _charge(state, idx, tasks[idx], exc, settings)
                    degrade = "MemoryError"
                except Exception as exc:  # noqa: BLE001 - retried, then recorded
                    _charge(state, idx, tasks[idx], exc, settings)
            now = time.monotonic()
            for fut, (idx, deadline) in list(inflight.items()):
                if deadline <= now and not fut.done():
                    del inflight[fut]
                    _charge(state, idx, tasks[idx], TimeoutError(f"no result after {settings.timeout_s}s"), settings)
                    degrade = "a task timed out"
        if degrade is None:
            pool.shutdown(wait=True)
            break
        # Harvest what finished meanwhile; every other unfinished task goes back in the queue.
        for fut, (idx, _deadline) in inflight.items():
            exc = fut.exception() if fut.done() and not fut.cancelled() else None
            if fut.done() and not fut.cancelled() and exc is None:
                state.results[idx] = fut.result()
            elif isinstance(exc, BrokenProcessPool):
                _charge(state, idx, tasks[idx], exc, settings)  # died with the pool
            else:
                state.queue.append(idx)
        _stop_pool(pool)
        new_workers = max(1, workers // 2)
        log.warning(
            "radiomics: %s; halving workers %d -> %d and resubmitting %d unfinished task(s)",
            degrade,
            workers,
            new_workers,
            len(state.queue),
        )
        workers = new_workers
    return state


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
    ``{roi_name, source, error, attempts}``. Each task gets ``settings.attempts`` tries with
    exponential backoff (``backoff_s * 2**n``). In the process pool (spawn, one image load and one
    BLAS/OMP thread per worker), a dead worker, a ``MemoryError`` or a task running past
    ``timeout_s`` shuts the pool down, halves the workers (at least 1) and resubmits every
    unfinished task. When a worker dies, every task in flight with it is charged one attempt.
    ``sequential=True`` runs in this process with the same retries (no timeout).
    ``fault_hook(task, attempt)``, a picklable callable, runs before each extraction (tests).
    """
    if sequential or not tasks:
        state = _run_sequential(Path(image_path), tasks, settings, fault_hook)
    else:
        workers = max(1, int(workers))
        log.info("Enabled parallel radiomics processing: %d workers (cores-1), thread_limit=1", workers)
        state = _run_pool(Path(image_path), tasks, settings, workers, fault_hook)
    results = [
        {"roi_name": tasks[i].roi_name, "source": tasks[i].source, **state.results[i]} for i in sorted(state.results)
    ]
    failures = [state.failures[i] for i in sorted(state.failures)]
    return results, failures
