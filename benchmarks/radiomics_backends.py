"""Benchmark: radiomics backends on one course, same parameters, in the same run.

Modes: pyradiomics in sequence (the baseline), pyradiomics in the project's pool, fastrad on the
CPU (in process), fastrad on CUDA (in process, when torch sees a device). For each: wall time,
features per second (feature values / s), the speed ratio against the baseline, and the largest
relative difference of any feature from the baseline's value (parity), with which classes fastrad
left to pyradiomics and why.

Courses: ``synthetic`` (the project's generator: BODY, PTV, PTV_boost, lungs, heart, spine, cord;
no shared data needed, so it runs as is on a GPU machine) and ``sts`` (STS_001's GTV from
``../shared/data/sts``, the issue's measurement: 117k voxels), or ``both``. Parameters by default:
the original image, all seven feature classes, bin width 25, no resampling.

    .venv/bin/python benchmarks/radiomics_backends.py [--course synthetic|sts|both] [--params YAML]
        [--workers N] [--rows 96]

On 2 CPU cores ``--course both`` takes 30-90 s (fastrad on the CPU is the slow part, and its shape
needs about 9 GiB for the GTV); results in ``benchmarks/results/radiomics_backends_2core.txt``. On
a GPU machine ``--rows 256`` gives ROIs large enough for the GPU to matter (BODY about 1M voxels)
and still finishes within a few minutes. A GPU run warms CUDA up on the smallest ROI first (not timed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

PARAMS = """\
imageType:
  Original: {}
featureClass:
  firstorder:
  shape:
  glcm:
  glrlm:
  glszm:
  gldm:
  ngtdm:
setting:
  label: 1
  binWidth: 25
"""
SHARED_STS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "sts" / "STS_001"


def synthetic_course(work: Path, rows: int) -> tuple[Path, Path]:
    """A synthetic course's CT and masks (the project's generator and mask writer)."""
    import SimpleITK as sitk

    from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
    from rt_resources.structures.masks import write_masks
    from rt_resources.structures.rtstruct import read_rois
    from rt_resources.synthetic import SynthOptions, write_patient

    options = SynthOptions(rows=rows, slices=48, pixel_mm=3.5 * 128 / rows, slice_mm=3.0, boost=True)
    course = write_patient(work / "drop", 0, options).courses[0]
    ct = read_ct_volume(validate_ct_series(sorted(f.path for f in course.files if f.modality == "CT")))
    sitk.WriteImage(ct, str(work / "ct.nii.gz"), True)
    (work / "masks" / "manual").mkdir(parents=True)
    write_masks(
        read_rois(next(f.path for f in course.files if f.modality == "RTSTRUCT")), ct, work / "masks" / "manual"
    )
    return work / "ct.nii.gz", work / "masks"


def sts_course(work: Path) -> tuple[Path, Path]:
    """STS_001's CT and GTV mask (shared data, read only)."""
    import SimpleITK as sitk

    from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
    from rt_resources.structures.masks import write_masks
    from rt_resources.structures.rtstruct import read_rois

    ct = read_ct_volume(validate_ct_series(sorted((SHARED_STS / "CT").glob("*.dcm"))))
    sitk.WriteImage(ct, str(work / "ct.nii.gz"), True)
    (work / "masks" / "manual").mkdir(parents=True)
    write_masks(read_rois(SHARED_STS / "RTSTRUCT" / "RS.dcm"), ct, work / "masks" / "manual")
    return work / "ct.nii.gz", work / "masks"


def run_mode(ct: Path, tasks, settings, workers: int, sequential: bool, device: str | None):
    """One mode's results, records and wall seconds; ``device`` forces fastrad's device."""
    from rt_resources.radiomics import backends
    from rt_resources.radiomics.engine import run_tasks

    real = backends.cuda_available
    if device is not None:
        backends.cuda_available = lambda: device == "cuda"
    try:
        records: list[dict] = []
        start = time.perf_counter()
        results, failures = run_tasks(ct, tasks, settings, workers=workers, sequential=sequential, provenance=records)
        seconds = time.perf_counter() - start
    finally:
        backends.cuda_available = real
    assert not failures, failures
    return results, records, seconds


def parity(reference: list[dict], results: list[dict]) -> tuple[float, str]:
    """Largest relative difference from the reference of any feature value, and its name."""
    from rt_resources.radiomics.backends import relative_difference

    worst, where = 0.0, "-"
    for ref, got in zip(reference, results, strict=True):
        assert list(ref) == list(got), "feature names differ"
        for key in ref:
            if key in ("roi_name", "source"):
                continue
            d = relative_difference(ref[key], got[key])
            if d > worst:
                worst, where = d, f"{got['roi_name']}:{key}"
    return worst, where


def fallbacks(records: list[dict]) -> str:
    """Classes pyradiomics computed in fastrad modes, with the ROIs (reasons shortened)."""
    seen: dict[str, list[str]] = {}
    for r in records:
        for cls, reason in r.get("pyradiomics", {}).items():
            seen.setdefault(f"{cls} ({reason.split(':')[0][:60]})", []).append(r["roi_name"])
        if r.get("cuda_oom"):
            seen.setdefault("CUDA out of memory -> CPU", []).append(r["roi_name"])
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in seen.items()) or "none"


def bench_course(name: str, ct: Path, masks: Path, params: Path, workers: int) -> list[tuple]:
    import torch

    from rt_resources.radiomics.engine import RadiomicsSettings, select_tasks

    base = RadiomicsSettings(params=params, light_params=None, timeout_s=3600)
    fast = RadiomicsSettings(params=params, light_params=None, timeout_s=3600, backend="fastrad")
    tasks, skipped = select_tasks(masks, base)
    print(f"\n== course {name}: {len(tasks)} ROIs ({', '.join(f'{t.roi_name} {t.n_voxels}' for t in tasks)} voxels)"
          f"; skipped {len(skipped)}")  # fmt: skip
    modes = [
        ("pyradiomics sequential", base, 1, True, None),
        (f"pyradiomics pool ({workers} workers)", base, workers, False, None),
        ("fastrad CPU", fast, 1, True, "cpu"),
    ]
    if torch.cuda.is_available():
        modes.append((f"fastrad CUDA ({torch.cuda.get_device_name(0)})", fast, 1, True, "cuda"))
    rows = []
    reference = None
    for label, settings, n, sequential, device in modes:
        if device == "cuda":  # CUDA context and kernels warmed up on the smallest ROI, not timed
            run_mode(ct, [min(tasks, key=lambda t: t.n_voxels)], settings, 1, True, device)
        results, records, seconds = run_mode(ct, tasks, settings, n, sequential, device)
        n_values = sum(len(r) - 2 for r in results)
        reference = reference or (results, seconds)
        worst, where = parity(reference[0], results)
        rows.append((name, label, seconds, n_values / seconds, reference[1] / seconds, worst, where,
                     fallbacks(records) if settings.backend == "fastrad" else ""))  # fmt: skip
        print(f"  {label:44} {seconds:8.2f} s  ({n_values} feature values)", flush=True)
    if not torch.cuda.is_available():
        rows.append((name, "fastrad CUDA", None, None, None, None, "skipped: torch sees no CUDA device", ""))
    return rows


def report(rows: list[tuple]) -> None:
    """The table, the fallbacks and a one-line summary."""
    print(f"\n{'course':10} {'mode':44} {'seconds':>8} {'features/s':>11} {'vs seq':>7} {'largest rel. diff':>18}")
    for course, label, seconds, rate, ratio, worst, where, _ in rows:
        if seconds is None:
            print(f"{course:10} {label:44} {where}")
            continue
        diff = "reference" if label.startswith("pyradiomics seq") else f"{worst:.1e}"
        shown = where if worst else ""
        print(f"{course:10} {label:44} {seconds:8.2f} {rate:11.0f} {ratio:6.2f}x {diff:>18}  {shown}")
    print("\npyradiomics computed in fastrad modes (class: ROIs):")
    for course, label, *_, notes in rows:
        if notes:
            print(f"  {course} / {label}: {notes}")
    measured = [r for r in rows if r[2] is not None and not r[1].startswith("pyradiomics seq")]
    parts = [f"{r[0]} {r[1]} {r[4]:.2f}x, max diff {r[5]:.1e}" for r in measured]
    print("\nSummary (speed vs pyradiomics in sequence): " + "; ".join(parts) + ".")


def main() -> None:
    import radiomics
    import torch

    from rt_resources.parallel import default_pool_workers

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--course", choices=("synthetic", "sts", "both"), default="both")
    parser.add_argument("--params", type=Path, default=None, help="pyradiomics parameter file (default: module's)")
    parser.add_argument("--workers", type=int, default=max(2, default_pool_workers()), help="pool workers")
    parser.add_argument("--rows", type=int, default=96, help="synthetic CT matrix (rows = columns)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rt-radiomics-backends-"))
    try:
        params = args.params or work / "params.yaml"
        if args.params is None:
            params.write_text(PARAMS)
        from importlib.metadata import version

        import fastrad  # noqa: F401 - fail early when missing

        cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
        described = args.params or "original image, 7 classes, binWidth 25"
        print(f"CPUs: {os.cpu_count()}; torch {torch.__version__} (CUDA device: {cuda}); fastrad {version('fastrad')}; "
              f"pyradiomics {radiomics.__version__}; params {described}")  # fmt: skip
        rows = []
        courses = ["synthetic", "sts"] if args.course == "both" else [args.course]
        for name in courses:
            if name == "sts" and not SHARED_STS.is_dir():
                print(f"\n== course sts: skipped, {SHARED_STS} not present")
                continue
            (work / name).mkdir()
            ct, masks = synthetic_course(work / name, args.rows) if name == "synthetic" else sts_course(work / name)
            rows += bench_course(name, ct, masks, params, args.workers)
        report(rows)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":  # the pool spawns workers
    main()
