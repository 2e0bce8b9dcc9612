"""Benchmark: masks -> RTSTRUCT with ``export_rtstruct`` against the function before this change and rt-utils.

A clinical-size case: a synthetic 512 x 512 x 150 CT at 0.977 x 0.977 x 2.5 mm (``write_patient``) and
100 smooth organ-like masks (ellipsoids of 2 cc to 2 litres, log-uniform, tilted, clipped to the body;
every tenth a hollow shell, so slices with holes), written as NIfTI uint8 on the CT grid. Or your own
case: ``--ct-dir`` (the CT series' files), ``--ct-nifti`` (its volume) and ``--masks`` (a folder of
NIfTI masks on that grid), e.g. TotalSegmentator's masks of a real course.

Timed in one run, each from the mask files to the written RTSTRUCT:

(a) the baseline, ``export_rtstruct`` as it was at commit 8fd045e (rt-utils builds the object and
    traces contours it then replaces; a whole-volume gather per mask), loaded from git into a
    temporary module. It takes ~1.5-2 s per mask here, so ``--baseline-subset N`` times it on the
    first N masks and extrapolates linearly to all (said so in the printout);
(b) rt-utils 1.2.7's own writer: ``RTStructBuilder.create_new`` + ``add_roi`` for each mask + ``save``
    (its contours are not voxel-exact; the masks are handed over as ``(y, x, z)`` arrays);
(c) the current ``export_rtstruct`` with ``workers=1`` and ``workers=N``.

The new RTSTRUCT is checked on a few masks: rasterized back with the project's rasterizer it must
give the mask voxel for voxel. ``compare_exports`` is the function another benchmark can import.

    .venv/bin/python benchmarks/rtstruct_export.py [--slices 150] [--masks-n 100] [--workers N]
        [--baseline-subset 10] [--keep DIR] [--ct-dir DIR --ct-nifti FILE --masks DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from types import ModuleType

import numpy as np

from rt_resources.parallel import default_pool_workers
from rt_resources.structures.export import export_rtstruct

REPO = Path(__file__).resolve().parents[1]
BASELINE_COMMIT = "8fd045e"
ROWS, PIXEL_MM, SLICE_MM = 512, 0.977, 2.5


# --------------------------------------------------------------------------- the case


def _ellipsoid_mask(shape_zyx, spacing_xyz, centre_mm, semi_axes_mm, rotation, hollow: bool) -> np.ndarray:
    """uint8 (z, y, x) mask of a rotated ellipsoid (index-space mm around the volume's corner), built in its box."""
    nz, ny, nx = shape_zyx
    sx, sy, sz = spacing_xyz
    reach = float(max(semi_axes_mm))
    lo = np.floor((np.asarray(centre_mm) - reach) / (sx, sy, sz)).astype(int).clip(0, (nx - 1, ny - 1, nz - 1))
    hi = np.ceil((np.asarray(centre_mm) + reach) / (sx, sy, sz)).astype(int).clip(0, (nx - 1, ny - 1, nz - 1))
    k, j, i = np.mgrid[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1]
    p = np.stack([i * sx, j * sy, k * sz], axis=-1) - centre_mm
    q = p @ rotation  # body axes
    r2 = ((q / semi_axes_mm) ** 2).sum(axis=-1)
    inside = r2 <= 1.0
    if hollow:
        inside &= r2 > 0.55**2
    out = np.zeros(shape_zyx, np.uint8)
    out[lo[2] : hi[2] + 1, lo[1] : hi[1] + 1, lo[0] : hi[0] + 1] = inside
    return out


def _rotation(rng: np.random.Generator) -> np.ndarray:
    """About z by any angle, then tilted by up to 20 degrees: organs are roughly axial."""
    a, t = rng.uniform(0, np.pi), np.radians(rng.uniform(-20, 20))
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(t), -np.sin(t)], [0, np.sin(t), np.cos(t)]])
    return rz @ rx


def build_case(
    folder: Path, slices: int = 150, n_masks: int = 100, seed: int = 0
) -> tuple[dict[str, Path], list[Path], Path]:
    """``(masks, ct_files, ct_nifti)`` of the synthetic clinical-size case, written in ``folder`` (reused if there)."""
    import SimpleITK as sitk

    from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
    from rt_resources.synthetic import SynthOptions, write_patient

    folder = Path(folder)
    ct_dir = folder / "patient" / "patient_000" / "course_1" / "CT"
    ct_nifti, mask_dir = folder / "ct.nii.gz", folder / "masks"
    if not ct_dir.is_dir():
        write_patient(
            folder / "patient", 0, SynthOptions(rows=ROWS, slices=slices, pixel_mm=PIXEL_MM, slice_mm=SLICE_MM)
        )
    ct_files = sorted(ct_dir.glob("*.dcm"))
    if not ct_nifti.exists():
        sitk.WriteImage(read_ct_volume(validate_ct_series(ct_files)), str(ct_nifti))
    names = [f"organ_{n:03d}" for n in range(n_masks)]
    masks = {name: mask_dir / f"{name}.nii.gz" for name in names}
    if all(p.exists() for p in masks.values()):
        return masks, ct_files, ct_nifti

    mask_dir.mkdir(parents=True, exist_ok=True)
    ct = sitk.ReadImage(str(ct_nifti))
    nx, ny, nz = ct.GetSize()
    spacing = ct.GetSpacing()
    width, length = nx * spacing[0], nz * spacing[2]
    # the phantom's body: an elliptic cylinder, semi-axes 0.40 and 0.28 of the field width, centred
    i, j = np.meshgrid(np.arange(nx) * spacing[0] - width / 2, np.arange(ny) * spacing[1] - width / 2)
    body = ((i / (0.40 * width)) ** 2 + (j / (0.28 * width)) ** 2) <= 1.0
    rng = np.random.default_rng(seed)
    volumes_cc = np.exp(rng.uniform(np.log(2.0), np.log(2000.0), n_masks))
    for n, path in enumerate(masks.values()):
        ratios = rng.uniform(0.6, 1.4, 3)
        ratios /= np.cbrt(ratios.prod())
        semi = np.cbrt(volumes_cc[n] * 1000.0 * 3 / (4 * np.pi)) * ratios  # mm
        room = np.array([0.40 * width, 0.28 * width]) - semi[:2].max()
        xy = rng.uniform(-1, 1, 2) * np.maximum(room, 5.0) * 0.7
        z = rng.uniform(0.2, 0.8) * length
        centre = np.array([xy[0] + width / 2, xy[1] + width / 2, z])
        mask = _ellipsoid_mask((nz, ny, nx), spacing, centre, semi, _rotation(rng), hollow=n % 10 == 9)
        mask &= body[None].astype(np.uint8)
        image = sitk.GetImageFromArray(mask)
        image.CopyInformation(ct)
        sitk.WriteImage(image, str(path))
    return masks, ct_files, ct_nifti


# --------------------------------------------------------------------------- the writers


def load_baseline(commit: str = BASELINE_COMMIT) -> ModuleType:
    """``rt_resources/structures/export.py`` as it was at ``commit``, as a module of its own."""
    source = subprocess.run(
        ["git", "show", f"{commit}:rt_resources/structures/export.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    name = f"_rtstruct_export_{commit}"
    spec = importlib.util.spec_from_loader(name, loader=None)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    exec(compile(source, f"<git {commit}:export.py>", "exec"), module.__dict__)
    return module


def rt_utils_export(masks: dict[str, Path], ct_files: list[Path], out_path: Path) -> Path:
    """rt-utils' own writer: ``create_new`` on a folder of links to the CT, ``add_roi`` per mask, ``save``.

    A mask goes over as the ``(y, x, z)`` bool array of its SimpleITK ``(z, y, x)`` array (rt-utils'
    ``[rows, columns, slices]`` for an axial head-first CT; the timing does not depend on the layout).
    """
    import SimpleITK as sitk
    from rt_utils import RTStructBuilder

    with tempfile.TemporaryDirectory(prefix="rtutils-ct-") as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        for n, path in enumerate(ct_files):
            os.symlink(Path(path).resolve(), Path(tmp) / f"{n:05d}.dcm")
        with contextlib.redirect_stdout(io.StringIO()):  # rt-utils prints
            rtstruct = RTStructBuilder.create_new(tmp)
            for name, path in masks.items():
                mask = np.transpose(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) != 0, (1, 2, 0))
                if mask.any():
                    rtstruct.add_roi(mask, name=name)
            rtstruct.save(str(out_path))
    return out_path


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def check_voxel_exact(rtstruct: Path, masks: dict[str, Path], ct_nifti: Path, n: int = 5) -> tuple[int, int]:
    """``(exact, checked)`` over ``n`` masks spread over the list: rasterized back, equal voxel for voxel."""
    import SimpleITK as sitk

    from rt_resources.structures.rasterize import rasterize_contours
    from rt_resources.structures.rtstruct import read_rois

    ct = sitk.ReadImage(str(ct_nifti))
    rois = {roi.name: roi for roi in read_rois(rtstruct)}
    names = list(masks)[:: max(1, len(masks) // n)][:n]
    exact = 0
    for name in names:
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(masks[name]))) != 0
        back = rasterize_contours(rois[name].contours, ct).mask != 0 if name in rois else np.zeros_like(expected)
        exact += int(np.array_equal(back, expected))
    return exact, len(names)


def compare_exports(
    masks: dict[str, Path],
    ct_files: list[Path],
    ct_nifti: Path,
    workers: int,
    baseline_subset: int | None = None,
    out_dir: Path | None = None,
) -> dict:
    """Seconds of (a) the baseline, (b) rt-utils, (c) the new function with 1 and ``workers`` workers, and ratios.

    ``baseline_subset``: time the baseline on that many masks only (spread evenly over ``masks``)
    and extrapolate linearly to all: its time without masks (loading the CT, writing) plus the
    subset's seconds per mask times the number of masks (``baseline_extrapolated`` is True then).
    """
    masks = dict(masks)
    with contextlib.ExitStack() as stack:
        out = Path(out_dir) if out_dir else Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rs-bench-")))
        out.mkdir(parents=True, exist_ok=True)
        result: dict = {"n_masks": len(masks), "n_ct_files": len(ct_files), "workers": workers}
        result["load_before"] = os.getloadavg()[0]

        subset = masks
        if baseline_subset and baseline_subset < len(masks):  # spread over the list (sizes are in random order)
            picked = np.linspace(0, len(masks) - 1, baseline_subset).round().astype(int)
            subset = {name: masks[name] for name in np.asarray(list(masks))[picked]}
        baseline = load_baseline()
        secs = _timed(baseline.export_rtstruct, subset, ct_files, ct_nifti, out / "RS_baseline.dcm")
        result["baseline_masks_timed"] = len(subset)
        result["baseline_extrapolated"] = len(subset) < len(masks)
        result["baseline_timed_s"] = secs
        result["baseline_s"] = secs
        if result["baseline_extrapolated"]:
            fixed = _timed(baseline.export_rtstruct, {}, ct_files, ct_nifti, out / "RS_baseline_empty.dcm")
            result["baseline_fixed_s"] = fixed
            result["baseline_s"] = fixed + (secs - fixed) / len(subset) * len(masks)

        result["rt_utils_s"] = _timed(rt_utils_export, masks, ct_files, out / "RS_rtutils.dcm")
        result["new_1_s"] = _timed(export_rtstruct, masks, ct_files, ct_nifti, out / "RS_new_1.dcm", workers=1)
        result[f"new_{workers}_s"] = _timed(
            export_rtstruct, masks, ct_files, ct_nifti, out / f"RS_new_{workers}.dcm", workers=workers
        )
        result["voxel_exact"] = check_voxel_exact(out / "RS_new_1.dcm", masks, ct_nifti)
        result["rtstruct_mb"] = (out / "RS_new_1.dcm").stat().st_size / 2**20
        result["load_after"] = os.getloadavg()[0]
    best = min(result["new_1_s"], result[f"new_{workers}_s"])
    result["speedup_vs_baseline_1"] = result["baseline_s"] / result["new_1_s"]
    result["speedup_vs_baseline_best"] = result["baseline_s"] / best
    result["speedup_vs_rt_utils_1"] = result["rt_utils_s"] / result["new_1_s"]
    result["speedup_vs_rt_utils_best"] = result["rt_utils_s"] / best
    return result


def report(result: dict, case: str) -> str:
    w = result["workers"]
    n, timed = result["n_masks"], result["baseline_masks_timed"]
    baseline_note = "timed on all masks"
    if result["baseline_extrapolated"]:
        baseline_note = (
            f"timed on {timed} of the {n} masks ({result['baseline_timed_s']:.1f} s; without masks "
            f"{result['baseline_fixed_s']:.1f} s), extrapolated linearly to {n} masks"
        )
    rows = [
        ("(a) baseline, export_rtstruct at " + BASELINE_COMMIT, result["baseline_s"]),
        ("(b) rt-utils create_new + add_roi + save", result["rt_utils_s"]),
        ("(c) export_rtstruct, workers=1", result["new_1_s"]),
        (f"(c) export_rtstruct, workers={w}", result[f"new_{w}_s"]),
    ]
    exact, checked = result["voxel_exact"]
    lines = [
        f"{os.cpu_count()} CPUs; {case}; {n} masks, {result['n_ct_files']} CT files",
        "",
        f"{'writer':<46} {'seconds':>8}  {'s/mask':>7}",
        *(f"{label:<46} {secs:>8.2f}  {secs / n:>7.3f}" for label, secs in rows),
        "",
        f"baseline: {baseline_note}",
        f"new vs baseline:  {result['speedup_vs_baseline_1']:.1f}x (workers=1), "
        f"{result['speedup_vs_baseline_best']:.1f}x (best)   target >= 20x",
        f"new vs rt-utils:  {result['speedup_vs_rt_utils_1']:.1f}x (workers=1), "
        f"{result['speedup_vs_rt_utils_best']:.1f}x (best)   target >= 2x",
        f"new RTSTRUCT: {result['rtstruct_mb']:.1f} MiB; rasterized back voxel-exact: {exact}/{checked} masks checked",
        f"load average (1 min) before / after: {result['load_before']:.1f} / {result['load_after']:.1f} "
        "(other processes share these cores: single runs, noisy)",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=150, help="CT slices of the synthetic case")
    parser.add_argument("--masks-n", type=int, default=100, help="masks of the synthetic case")
    parser.add_argument("--workers", type=int, default=max(2, default_pool_workers()), help="workers of (c)")
    parser.add_argument("--baseline-subset", type=int, default=None, help="time the baseline on this many masks")
    parser.add_argument("--keep", type=Path, default=None, help="build (or reuse) the case here")
    parser.add_argument("--ct-dir", type=Path, help="your case: the CT series' DICOM files")
    parser.add_argument("--ct-nifti", type=Path, help="your case: the CT volume (NIfTI)")
    parser.add_argument("--masks", type=Path, help="your case: a folder of NIfTI masks on the CT grid")
    args = parser.parse_args()
    print(f"# .venv/bin/python benchmarks/rtstruct_export.py {' '.join(sys.argv[1:])}".rstrip(), end="")
    print(f"   ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)", flush=True)

    with contextlib.ExitStack() as stack:
        if args.masks:
            if not (args.ct_dir and args.ct_nifti):
                parser.error("--masks needs --ct-dir and --ct-nifti")
            files = sorted(p for p in args.masks.iterdir() if p.name.endswith((".nii.gz", ".nii")))
            masks = {p.name.split(".nii")[0]: p for p in files}
            ct_files = sorted(p for p in args.ct_dir.iterdir() if p.is_file())
            ct_nifti, case = args.ct_nifti, f"masks of {args.masks}"
        else:
            folder = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rs-case-")))
            start = time.perf_counter()
            masks, ct_files, ct_nifti = build_case(folder, args.slices, args.masks_n)
            print(f"case ready in {time.perf_counter() - start:.1f} s ({folder})", flush=True)
            case = f"synthetic CT {ROWS}x{ROWS}x{args.slices} at {PIXEL_MM}x{PIXEL_MM}x{SLICE_MM} mm, ellipsoid masks"
        result = compare_exports(masks, ct_files, ct_nifti, args.workers, args.baseline_subset)
    print()
    print(report(result, case))


if __name__ == "__main__":
    main()
