"""TotalSegmentator through its Python API: per-class masks on the CT grid.

torch and totalsegmentator are imported inside :func:`run_totalsegmentator` only (the
multiprocess executor re-imports the code location in every step process). Weights come
from ``TOTALSEG_HOME_DIR``; when they are missing the call fails at once with where they
were looked for and how to install them: TotalSegmentator would otherwise try a download
without a timeout (no internet here). Usage statistics are off; the CPU-torch trainer
lookup problem is handled in :mod:`rt_resources.segmentation.nnunet_compat`.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


class WeightsMissing(RuntimeError):
    """TotalSegmentator's model weights are not installed where they are looked for."""


class DeviceUnavailable(RuntimeError):
    """``device=gpu`` was asked for and no CUDA device is visible."""


def default_threads(cores: int | None = None) -> int:
    """Resampling/saving threads: max(2, min(8, cores // 2))."""
    cores = cores or os.cpu_count() or 2
    return max(2, min(8, cores // 2))


@dataclass(frozen=True)
class TotalSegSettings:
    home: Path  #: TOTALSEG_HOME_DIR
    task: str = "total"
    fast: bool = False
    roi_subset: tuple[str, ...] = ()
    device: str = "gpu"  #: gpu | cpu
    force_split: bool = False
    threads: int = field(default_factory=default_threads)
    license_key: str = ""


@dataclass
class SegmentationResult:
    masks: dict[str, Path]  #: class name -> mask file
    device: str
    seconds: float
    notes: list[str]


def check_ready(settings: TotalSegSettings) -> Path:
    """Fail fast, before importing torch, when weights are missing; returns the checkpoint path."""
    from rt_resources.segmentation.nnunet_compat import totalseg_weights_present

    present, where = totalseg_weights_present(settings.home, settings.task, settings.fast)
    if not present:
        raise WeightsMissing(
            f"TotalSegmentator weights for task {settings.task!r}{' (fast)' if settings.fast else ''} not found: "
            f"looked for {where} (TOTALSEG_HOME_DIR={settings.home}). Install them on a machine with internet "
            "(`totalseg_download_weights -t total` or a first TotalSegmentator run there), copy the "
            f"folder {Path(settings.home) / 'nnunet'} here, and point TOTALSEG_HOME_DIR at it. "
            "No download is attempted from here."
        )
    return where


def run_totalsegmentator(
    ct_path: Path, out_dir: Path, settings: TotalSegSettings, device_index: int | None = None
) -> SegmentationResult:
    """Segment ``ct_path`` into ``out_dir/<class>.nii.gz`` (one file per class, CT grid).

    ``device_index``: the CUDA device (this process's index) when ``settings.device`` is gpu, the
    one a :class:`~rt_resources.gpu_leases.DeviceLease` gave the step (None: CUDA's default)."""
    check_ready(settings)
    from rt_resources.parallel import terminable_children
    from rt_resources.segmentation.nnunet_compat import prepare_totalsegmentator_runtime

    prepare_totalsegmentator_runtime(Path(settings.home))
    import torch
    from totalsegmentator.python_api import totalsegmentator

    device = settings.device
    if device == "gpu" and not torch.cuda.is_available():
        raise DeviceUnavailable(
            "TotalSegmentator device 'gpu' was asked for but torch sees no CUDA device; "
            "use --totalseg-device cpu (slow) or run on a machine with a GPU"
        )
    if device == "gpu" and device_index is not None:
        device = f"gpu:{use_cuda_index(device_index)}"  # TotalSegmentator's name of cuda:<index>
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        with terminable_children():  # nnU-Net terminates its worker pools with SIGTERM
            totalsegmentator(
                input=Path(ct_path),
                output=out_dir,
                ml=False,
                task=settings.task,
                fast=settings.fast,
                roi_subset=list(settings.roi_subset) or None,
                device=device,
                force_split=settings.force_split,
                nr_thr_resamp=settings.threads,
                nr_thr_saving=settings.threads,
                license_number=settings.license_key or None,
                quiet=True,
            )
    finally:
        stop_worker_pools()
    seconds = time.perf_counter() - start
    masks = {p.name[: -len(".nii.gz")]: p for p in sorted(out_dir.glob("*.nii.gz"))}
    notes = conform_to_ct(masks, Path(ct_path))
    return SegmentationResult(masks=masks, device=device, seconds=seconds, notes=notes)


def use_cuda_index(index: int) -> int:
    """Check ``index`` against the CUDA devices torch sees and make it torch's current device.
    TotalSegmentator falls back to the CPU, silently, for an index it does not see; nnU-Net
    empties the cache of the current device."""
    import torch

    count = torch.cuda.device_count()
    if not 0 <= int(index) < count:
        raise DeviceUnavailable(f"GPU index {index} was leased but torch sees {count} CUDA device(s) here")
    torch.cuda.set_device(int(index))
    return int(index)


def stop_worker_pools() -> None:
    """Shut down joblib's reusable (loky) worker pool that TotalSegmentator's resampling starts.

    Its idle workers otherwise live for 300 s, and a process that exits while they live
    waits for them: a Dagster step process would hold the GPU run slot for five minutes.
    """
    import sys

    if "joblib" in sys.modules:
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True, kill_workers=True)


def conform_to_ct(masks: dict[str, Path], ct_path: Path) -> list[str]:
    """Make every mask uint8 on exactly the CT's grid (nearest neighbour if it is not)."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(ct_path))
    reader.ReadImageInformation()
    ct = sitk.Image(reader.GetSize(), sitk.sitkUInt8)
    ct.SetOrigin(reader.GetOrigin())
    ct.SetSpacing(reader.GetSpacing())
    ct.SetDirection(reader.GetDirection())
    notes = []
    for name, path in masks.items():
        mask = sitk.ReadImage(str(path))
        same = (
            mask.GetSize() == ct.GetSize()
            and np.allclose(mask.GetOrigin(), ct.GetOrigin(), atol=1e-3)
            and np.allclose(mask.GetSpacing(), ct.GetSpacing(), atol=1e-4)
            and np.allclose(mask.GetDirection(), ct.GetDirection(), atol=1e-4)
        )
        if not same:
            mask = sitk.Resample(mask, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
            notes.append(f"{name}: resampled onto the CT grid (nearest neighbour)")
        elif mask.GetPixelID() == sitk.sitkUInt8:
            continue
        mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
        mask.CopyInformation(ct)
        sitk.WriteImage(mask, str(path), True)
    return notes


def move_masks(masks: dict[str, Path], folder: Path) -> dict[str, str]:
    """Move masks into ``folder``, returning class name -> file name."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, path in masks.items():
        shutil.move(str(path), folder / path.name)
        out[name] = path.name
    return out
