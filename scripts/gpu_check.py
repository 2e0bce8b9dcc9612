"""GPU check of the segmentation stage (run by hand on a machine with CUDA).

Builds the tiny stand-in TotalSegmentator model (the official weights cannot be fetched in
this workplace), then segments a realistic-size synthetic CT through the project's own
resource code (``run_totalsegmentator`` with device gpu, and once with device cpu for
comparison) and a custom nnU-Net model through ``run_nnunet_model``. Prints JSON with the
times per course and proof that CUDA was used (device name, peak CUDA memory).

    python scripts/gpu_check.py OUT_DIR            # on the GPU machine
    python scripts/gpu_check.py OUT_DIR --dry-run  # here: small CT, CPU only, checks the script
    python scripts/gpu_check.py OUT_DIR --quick    # 256 x 256 x 100 CT, GPU only
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def synthetic_ct(path: Path, size_xy: int = 512, slices: int = 150) -> None:
    """A 512 x 512 x 150 CT at 0.98 x 0.98 x 2.5 mm: water body, lungs, spine."""
    import SimpleITK as sitk

    z, y, x = np.ogrid[:slices, :size_xy, :size_xy]
    c = size_xy / 2
    arr = np.full((slices, size_xy, size_xy), -1000, np.int16)
    body = ((x - c) / (0.42 * size_xy)) ** 2 + ((y - c) / (0.30 * size_xy)) ** 2 < 1
    arr[np.broadcast_to(body, arr.shape)] = 40
    for side in (-1, 1):
        lung = ((x - c - side * 0.18 * size_xy) / (0.1 * size_xy)) ** 2 + ((y - c) / (0.15 * size_xy)) ** 2 < 1
        arr[np.broadcast_to(lung, arr.shape) & (z > 0.3 * slices)] = -800
    arr[np.broadcast_to(((x - c) ** 2 + (y - c - 0.17 * size_xy) ** 2) < (0.05 * size_xy) ** 2, arr.shape)] = 700
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.98, 0.98, 2.5))
    image.SetOrigin((-250.0, -250.0, -180.0))
    sitk.WriteImage(image, str(path), True)


def main(out: Path, dry_run: bool = False, quick: bool = False) -> None:
    import torch

    from rt_resources.segmentation.nnunet_models import load_model, run_nnunet_model
    from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
    from rt_resources.segmentation.totalseg import TotalSegSettings, run_totalsegmentator

    report: dict = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "device_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    work = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    home = work / "home"
    t0 = time.perf_counter()
    model_folder = build_tiny_totalseg_model(home, "total_fast")
    report["build_model_s"] = round(time.perf_counter() - t0, 2)
    ct = work / "ct.nii.gz"
    size = (96, 24) if dry_run else (256, 100) if quick else (512, 150)
    synthetic_ct(ct, *size)
    report["ct"] = f"{size[0]}x{size[0]}x{size[1]} voxels"
    gpu = "cpu" if dry_run else "gpu"

    plan = [(gpu, 1 if dry_run else 2)] + ([] if quick else [("cpu", 1)])
    for device, runs in plan:
        times = []
        for n in range(runs):
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            settings = TotalSegSettings(home=home, fast=True, device=device, threads=8)
            result = run_totalsegmentator(ct, work / f"seg_{device}_{n}", settings)
            times.append(round(result.seconds, 2))
            print(f"totalseg {device} run {n}: {result.seconds:.2f} s", flush=True)
            if device == "gpu" and not dry_run:
                report["gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
            report[f"totalseg_{device}_classes"] = len(result.masks)
        report[f"totalseg_{device}_seconds"] = times

    trained = model_folder.parent
    custom = work / "models" / "tiny"
    (custom).mkdir(parents=True)
    (custom / trained.name).symlink_to(trained)
    trainer, plans, configuration = model_folder.name.split("__")
    (custom / "model.yaml").write_text(
        f"name: tiny\ndataset: {trained.name}\ntrainer: {trainer}\nplans: {plans}\n"
        f"configuration: {configuration}\nfolds: [0]\nlabels: {{1: spleen, 5: liver}}\n"
    )
    times = []
    for n in range(1):
        if not dry_run:
            torch.cuda.reset_peak_memory_stats()
        masks, seconds = run_nnunet_model(load_model(custom), ct, work / f"custom_{n}", gpu)
        times.append(round(seconds, 2))
    report[f"custom_model_{gpu}_seconds"] = times
    if not dry_run:
        report["custom_model_gpu_peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    report["custom_model_labels"] = sorted(masks)
    text = json.dumps(report, indent=2)
    print(text)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(text)


if __name__ == "__main__":  # nnU-Net starts worker processes with spawn
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(Path(args[0] if args else "."), dry_run="--dry-run" in sys.argv, quick="--quick" in sys.argv)
