"""Benchmark: radiomics of one course, sequential vs the parallel pool, in the same run.

A synthetic course (8 ROIs: BODY, PTV, PTV_boost, lungs, heart, spine, cord) is written,
turned into ct.nii.gz and masks with the project's engines, and its features extracted
three ways with ``rt_resources.radiomics.engine.run_tasks``: in process (``--sequential-
radiomics``), a pool of 1 worker (the default on 2 cores: cores - 1) and a pool of 2
workers. Prints wall time, speed-up against sequential and peak memory (max RSS of this
process and of the worker processes).

    .venv/bin/python benchmarks/radiomics_pool.py [--params rt_resources/radiomics/params/CT_demo.yaml]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path


def build_course(work: Path) -> tuple[Path, Path]:
    import SimpleITK as sitk

    from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
    from rt_resources.structures.masks import write_masks
    from rt_resources.structures.rtstruct import read_rois
    from rt_resources.synthetic import SynthOptions, write_patient

    patient = write_patient(work / "drop", 0, SynthOptions(rows=128, slices=60, pixel_mm=3.5, slice_mm=3.0, boost=True))
    course = patient.courses[0]
    ct_files = sorted(f.path for f in course.files if f.modality == "CT")
    ct = read_ct_volume(validate_ct_series(ct_files))
    ct_path = work / "ct.nii.gz"
    sitk.WriteImage(ct, str(ct_path), True)
    struct = next(f.path for f in course.files if f.modality == "RTSTRUCT")
    (work / "masks" / "manual").mkdir(parents=True)
    write_masks(read_rois(struct), ct, work / "masks" / "manual")
    return ct_path, work / "masks"


def main() -> None:
    from rt_resources.radiomics.engine import PARAMS_DIR, RadiomicsSettings, run_tasks, select_tasks

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=PARAMS_DIR / "CT_demo.yaml")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rt-radiomics-bench-"))
    try:
        ct_path, masks = build_course(work)
        settings = RadiomicsSettings(params=args.params)
        tasks, skipped = select_tasks(masks, settings)
        print(f"CPUs: {os.cpu_count()}; {len(tasks)} ROIs; params {args.params.name}; skipped {len(skipped)}")
        # per-ROI cost in process: the bound any 2-worker schedule meets (the largest ROI, or half the total)
        from rt_resources.radiomics.engine import extract_one

        costs = {}
        for task in tasks:
            start = time.perf_counter()
            extract_one(ct_path, task, settings)
            costs[f"{task.source}/{task.roi_name}"] = time.perf_counter() - start
        total = sum(costs.values())
        bound = total / max(max(costs.values()), total / 2)
        print("per-ROI seconds (in process): " + ", ".join(f"{k} {v:.1f}" for k, v in costs.items()))
        print(f"sum {total:.1f} s; largest ROI {max(costs.values()):.1f} s; best possible with 2 workers {bound:.2f}x")
        rows = []
        baseline = None
        for label, workers, sequential in (
            ("sequential (in process)", 1, True),
            ("pool, 1 worker", 1, False),
            ("pool, 2 workers", 2, False),
        ):
            start = time.perf_counter()
            results, failures = run_tasks(ct_path, tasks, settings, workers=workers, sequential=sequential)
            seconds = time.perf_counter() - start
            assert not failures and len(results) == len(tasks), failures
            baseline = baseline or seconds
            rows.append((label, seconds, baseline / seconds))
        peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"\n{'mode':26} {'seconds':>8} {'speed-up':>9}")
        for label, seconds, speedup in rows:
            print(f"{label:26} {seconds:8.2f} {speedup:8.2f}x")
        print(f"peak RSS: this process {peak_self:.0f} MB, largest worker {peak_children:.0f} MB")
        print(
            f"\nSummary: {len(tasks)} ROIs on {os.cpu_count()} CPUs: sequential {rows[0][1]:.1f} s, "
            f"1 worker {rows[1][1]:.1f} s ({rows[1][2]:.2f}x), 2 workers {rows[2][1]:.1f} s ({rows[2][2]:.2f}x)."
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # the pool spawns workers
    main()
