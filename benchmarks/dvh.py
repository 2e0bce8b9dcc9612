"""Benchmark: the project's contour DVH engine vs dicompyler-core 0.5.6, speed and accuracy, in one run.

dicompyler-core is our reference contour DVH; this shows what ``contour_dvh`` (supersampled slabs, trilinear
dose) costs and gains against it:

1. the analytic "gradient" course (``write_analytic_course``; D = 30 Gy + 0.2 Gy/mm * x, closed-form
   truth): per ROI, seconds and volume/mean/D95/D2 errors for ours, dicompyler default and dicompyler
   with in-plane interpolation to dose pixel / 4 (several times slower: small ROIs only, not BODY);
2. the dicompyler example (../shared/data/dicompyler-example, skipped if missing): seconds and
   differences in volume and mean, ours vs dicompyler default.

dicompyler is called as usual, with file paths (it parses RTSTRUCT and RTDOSE on every call); ours reads
them once per course ("load" row, in the totals). Timings are medians of 3. dicompyler's D95/D2 are read
from its cumulative curve, never its ``statistic('D95')`` (0 on step DVHs).

    .venv/bin/python benchmarks/dvh.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from rt_resources.dose.rtdose import read_rtdose
from rt_resources.dvh.dicompyler_reference import _dvhcalc
from rt_resources.dvh.sampling import DoseSampler, contour_dvh
from rt_resources.structures.rtstruct import read_rois
from rt_resources.synthetic.analytic import write_analytic_course

REPEATS = 3
SMALL = ("Box", "Cylinder", "Sphere", "SmallSphere", "EdgeBox")  # interpolated dicompyler only here
EXAMPLE = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dicompyler-example"


def timed(fn, *args, **kwargs):
    """(median seconds of REPEATS calls of fn(*args, **kwargs), last result)."""
    secs = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        secs.append(time.perf_counter() - start)
    return statistics.median(secs), result


def dcp_metrics(dvh) -> dict[str, float]:
    """volume/mean and D95/D2 of a dicompyler DVH, D_x read from its cumulative curve (bin lower edges)."""
    cum = dvh.cumulative
    volumes, edges = np.asarray(cum.counts, float), np.asarray(cum.bins, float)
    out = {"vol": float(dvh.volume), "mean": float(dvh.mean)}
    for pct in (95, 2):
        above = np.nonzero(volumes >= dvh.volume * pct / 100.0)[0]
        out[f"d{pct}"] = float(edges[above[-1]]) if above.size and dvh.volume > 0 else float("nan")
    return out


def ratio(ours: float, other: float) -> str:
    return f"ours {other / ours:.1f}x faster" if ours < other else f"ours {ours / other:.1f}x slower"


def run_course(rtss: Path, rtdose: Path, single_plane_mm: float, interp_names=()) -> tuple[float, list]:
    """Load seconds for ours, and per ROI with contours: (name, {engine: (seconds, metrics)})."""
    dvhcalc = _dvhcalc()
    load_s, (rois, sampler) = timed(lambda: (read_rois(rtss), DoseSampler(read_rtdose(rtdose).image)))
    res = sampler.spacing[0] / 4.0
    rows = []
    for roi in (r for r in rois if not r.empty):
        sec, dvh = timed(contour_dvh, roi.contours, sampler, single_plane_mm)
        eng = {"ours": (sec, {"vol": dvh.volume_cc, "mean": dvh.mean_gy, "d95": dvh.d_pct(95), "d2": dvh.d_pct(2)})}
        sec, dvh = timed(dvhcalc.get_dvh, str(rtss), str(rtdose), roi.number)
        eng["dcp"] = (sec, dcp_metrics(dvh))
        if roi.name in interp_names:
            sec, dvh = timed(dvhcalc.get_dvh, str(rtss), str(rtdose), roi.number, interpolation_resolution=(res, res))
            eng["dcp_i"] = (sec, dcp_metrics(dvh))
        rows.append((roi.name, eng))
    return load_s, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the analytic course here and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="rt-dvh-bench-"))
    try:
        course = write_analytic_course(work / "gradient", "gradient")
        load_s, rows = run_course(course.folder / "RTSTRUCT.dcm", course.folder / "RTDOSE.dcm", 2.0, SMALL)
        labels = {"ours": "ours", "dcp": "dicompyler", "dcp_i": "dicompyler interp 0.625mm"}
        print("Analytic gradient course (errors vs closed form; seconds = median of 3)")
        head = f"{'seconds':>8} {'vol err %':>10} {'mean err Gy':>12} {'D95 err':>8} {'D2 err':>8}"
        print(f"{'ROI':12} {'engine':26} {head}")
        print(f"{'(all)':12} {'ours: load RTSTRUCT+RTDOSE':26} {load_s:>8.3f}")
        tot = {"ours": load_s, "dcp": 0.0}
        worst, vol_err = {k: 0.0 for k in labels}, {}
        for name, eng in rows:
            exp = course.expected[name]
            for key, (sec, m) in eng.items():
                ve = 100.0 * (m["vol"] - exp.volume_cc) / exp.volume_cc
                vol_err[name, key] = ve
                worst[key] = max(worst[key], ve, key=abs)
                tot[key] = tot.get(key, 0.0) + sec
                d95, d2 = m["d95"] - exp.d_at_volume_pct(95), m["d2"] - exp.d_at_volume_pct(2)
                print(
                    f"{name:12} {labels[key]:26} {sec:>8.3f} {ve:>+10.3f} {m['mean'] - exp.mean_gy:>+12.4f} "
                    f"{d95:>+8.3f} {d2:>+8.3f}"
                )
        for key, name in (("ours", "TOTAL"), ("dcp", "TOTAL"), ("dcp_i", "TOTAL small")):
            print(f"{name:12} {labels[key]:26} {tot[key]:>8.3f}")

        ex = None  # [ours seconds, dicompyler seconds, max |volume difference| %]
        if (EXAMPLE / "rtss.dcm").is_file() and (EXAMPLE / "rtdose.dcm").is_file():
            ex_load, ex_rows = run_course(EXAMPLE / "rtss.dcm", EXAMPLE / "rtdose.dcm", 3.0)
            print("\ndicompyler example (ours - dicompyler; seconds = median of 3)")
            print(f"{'ROI':16} {'ours s':>8} {'dcp s':>8} {'vol diff %':>11} {'mean diff Gy':>13}")
            print(f"{'(load, ours)':16} {ex_load:>8.3f}")
            ex = [ex_load, 0.0, 0.0]
            for name, eng in ex_rows:
                (so, mo), (sd, md) = eng["ours"], eng["dcp"]
                ex[0], ex[1] = ex[0] + so, ex[1] + sd
                dv = 100.0 * (mo["vol"] - md["vol"]) / md["vol"]
                ex[2] = max(ex[2], abs(dv))
                print(f"{name:16} {so:>8.3f} {sd:>8.3f} {dv:>+11.3f} {mo['mean'] - md['mean']:>+13.4f}")
            print(f"{'TOTAL':16} {ex[0]:>8.3f} {ex[1]:>8.3f}   (max |vol diff| {ex[2]:.3f} %)")
        else:
            print(f"\ndicompyler example not found at {EXAMPLE.resolve()}: skipped")

        print(
            f"\nanalytic total time: {ratio(tot['ours'], tot['dcp'])} than dicompyler default "
            f"({tot['ours']:.3f} s vs {tot['dcp']:.3f} s)"
        )
        if ex:
            print(f"example total time: {ratio(ex[0], ex[1])} than dicompyler default ({ex[0]:.3f} s vs {ex[1]:.3f} s)")
        print("worst analytic volume error: " + ", ".join(f"{labels[k]} {worst[k]:+.3f} %" for k in labels))
        small = ", ".join(f"{labels[k]} {vol_err['SmallSphere', k]:+.3f} %" for k in labels)
        print(f"SmallSphere volume error: {small}")
        print(
            f"Summary: analytic gradient course, {ratio(tot['ours'], tot['dcp'])} than dicompyler-core 0.5.6 default; "
            f"worst volume error ours {worst['ours']:+.2f} % vs dicompyler {worst['dcp']:+.2f} % "
            f"(interp 0.625 mm {worst['dcp_i']:+.2f} %), SmallSphere {vol_err['SmallSphere', 'ours']:+.2f} % vs "
            f"{vol_err['SmallSphere', 'dcp']:+.2f} %"
            + (f"; dicompyler example {ratio(ex[0], ex[1])}, max |vol diff| {ex[2]:.2f} %." if ex else ".")
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
