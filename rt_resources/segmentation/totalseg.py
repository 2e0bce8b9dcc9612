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
    backend: str = "totalsegmentator"  #: totalsegmentator | standin
    standin_seconds: float = 0.0
    worker_idle_s: float = 600.0
    inference_timeout_s: float = 3600.0

    def model_spec(self):
        """What the segmentation worker loads for these settings."""
        from rt_resources.segmentation.worker import ModelSpec

        standin = self.backend == "standin"
        return ModelSpec(
            backend=self.backend,
            home="" if standin else str(Path(self.home).resolve()),
            task=self.task,
            fast=self.fast,
            standin_seconds=self.standin_seconds if standin else 0.0,
        )


@dataclass
class SegmentationResult:
    masks: dict[str, Path]  #: class name -> mask file
    device: str
    seconds: float
    notes: list[str]


def check_ready(settings: TotalSegSettings) -> Path:
    """Fail fast, before importing torch, when weights are missing; returns the checkpoint path
    (the stand-in needs none: its own module is its "checkpoint")."""
    if settings.backend == "standin":
        from rt_resources.segmentation import standin

        return Path(standin.__file__)
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


# ------------------------------------------------------------------ the split path (long-lived workers)


def model_spacing_mm(task: str, fast: bool) -> float:
    """The isotropic spacing TotalSegmentator resamples the CT to for ``task`` (1.5 mm for ``total``,
    3 mm for ``total --fast``), from its own task table."""
    from rt_resources.segmentation.nnunet_compat import task_config

    resample = task_config(task, fast).get("resample")
    if resample is None:
        raise ValueError(f"TotalSegmentator task {task!r} has no fixed model spacing")
    return float(resample if np.isscalar(resample) else resample[0])


def prepare_input(ct_path: Path, out_path: Path, settings: TotalSegSettings) -> dict:
    """The model's input, as TotalSegmentator prepares it before its predictor runs: the CT in the
    closest canonical (RAS) orientation, resampled to the model spacing (first order, int32), saved
    as NIfTI at ``out_path``. Returns its shape and spacing."""
    import nibabel as nib
    from totalsegmentator.alignment import as_closest_canonical
    from totalsegmentator.resampling import change_spacing

    spacing = model_spacing_mm(settings.task, settings.fast)
    image = as_closest_canonical(nib.load(str(ct_path)))
    resampled = change_spacing(image, spacing, order=1, dtype=np.int32, nr_cpus=settings.threads)
    from rt_resources.fileio import atomic_path

    with atomic_path(Path(out_path)) as tmp:
        nib.save(resampled, str(tmp))
    stop_worker_pools()
    return {"shape": [int(v) for v in resampled.shape], "spacing_mm": spacing}


def labelmap_to_ct(labelmap_path: Path, ct_path: Path, settings: TotalSegSettings) -> np.ndarray:
    """The model's label map back on the CT's grid, as TotalSegmentator does it: nearest-neighbour
    resampling to the canonical CT's shape and affine, then the canonical orientation undone.
    Returns a uint8 array in SimpleITK order (z, y, x) of ``ct_path``'s grid."""
    import nibabel as nib
    from totalsegmentator.alignment import as_closest_canonical, undo_canonical
    from totalsegmentator.resampling import change_spacing

    original = nib.load(str(ct_path))
    canonical = as_closest_canonical(original)
    labels = nib.load(str(labelmap_path))
    spacing = model_spacing_mm(settings.task, settings.fast)
    back = change_spacing(
        labels,
        spacing,
        canonical.shape,
        order=0,
        dtype=np.uint8,
        nr_cpus=settings.threads,
        force_affine=canonical.affine,
    )
    back = undo_canonical(back, original)
    stop_worker_pools()
    data = np.asarray(back.dataobj).astype(np.uint8)  # (x, y, z) of the NIfTI
    return np.ascontiguousarray(data.transpose(2, 1, 0))


def write_class_masks(labels_zyx: np.ndarray, ct_path: Path, folder: Path, task: str, roi_subset=()) -> list[dict]:
    """One uint8 mask per non-empty class of ``task`` in ``folder`` (``<class>.nii.gz`` on the CT
    grid), and one record per class of the task (``roi_name, file, voxels, volume_cc, empty``): an
    empty class has no file. With ``roi_subset`` only those classes are kept."""
    import SimpleITK as sitk
    from scipy import ndimage
    from totalsegmentator.map_to_binary import class_map

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(ct_path))
    reader.ReadImageInformation()
    voxel_cc = float(np.prod(reader.GetSpacing())) / 1000.0
    names = class_map[task]
    wanted = set(roi_subset) if roi_subset else None
    top = max(names)
    counts = np.bincount(labels_zyx.ravel(), minlength=top + 1)
    boxes = ndimage.find_objects(labels_zyx, max_label=top)
    records = []
    for label, name in sorted(names.items()):
        if wanted is not None and name not in wanted:
            continue
        voxels = int(counts[label]) if label < len(counts) else 0
        record = {
            "roi_name": name,
            "file": None,
            "voxels": voxels,
            "volume_cc": voxels * voxel_cc,
            "empty": voxels == 0,
        }
        if voxels:
            box = boxes[label - 1]
            mask = np.zeros(labels_zyx.shape, dtype=np.uint8)
            mask[box] = labels_zyx[box] == label
            image = sitk.GetImageFromArray(mask)
            image.SetOrigin(reader.GetOrigin())
            image.SetSpacing(reader.GetSpacing())
            image.SetDirection(reader.GetDirection())
            record["file"] = f"{name}.nii.gz"
            sitk.WriteImage(image, str(Path(folder) / record["file"]), True)
        records.append(record)
    return records


def engine_device(kind: str, index: int | None) -> str:
    """The worker's device name: ``cpu``, or ``cuda:<index>`` (this process's CUDA index of the
    leased device; torch is imported by the worker, not here)."""
    if kind == "cpu":
        return "cpu"
    return f"cuda:{int(index or 0)}"
