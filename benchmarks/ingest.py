"""Benchmark: how fast the drop indexer finds out what is in a DICOM drop.

Compared on one synthetic drop (~5,000 files written by ``rt_resources.synthetic``):

* naive full read: ``pydicom.dcmread(path)`` on every file plus ``ds.pixel_array`` where there
  is PixelData -- what a tool that "fully reads every file" pays;
* header-only read: ``pydicom.dcmread(path, stop_before_pixels=True)`` -- the old system's best case;
* ``DropIndex.scan()`` cold (fresh index folder): reads each file once, sha256s it, parses the header,
  in one process (``workers=1``) and across processes (the default on a cold scan);
* ``DropIndex.scan()`` again with nothing changed (stat only), and after adding one patient;
* ``link_courses`` on the scanned entries;
* one ``dicom_drop_sensor`` tick over the unchanged drop (a real Dagster instance), which must
  parse nothing.

All files are read once untimed first so every method sees a warm OS page cache; the three cold
methods are then run in interleaved rounds, and each timing is the median of 3 repetitions.

    .venv/bin/python benchmarks/ingest.py [--patients N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom

from rt_resources.ingest.index import DropIndex
from rt_resources.ingest.linking import link_courses
from rt_resources.synthetic import SynthOptions, write_cohort, write_patient

OPTIONS = SynthOptions(rows=64, slices=95, pixel_mm=5.0, slice_mm=3.0, boost=True)
REPEATS = 3


def full_read(files: list[Path]) -> None:
    for path in files:
        ds = pydicom.dcmread(path)
        if "PixelData" in ds:
            ds.pixel_array  # noqa: B018 -- decoding the pixels is the point


def header_read(files: list[Path]) -> None:
    for path in files:
        pydicom.dcmread(path, stop_before_pixels=True)


def ratio(base: float, sec: float) -> str:
    if sec == base:
        return "baseline"
    return f"{base / sec:.1f}x faster" if sec < base else f"{sec / base:.1f}x slower"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def sensor_ticks(drop: Path, data_root: Path) -> list[float]:
    """Seconds of sensor ticks over an unchanged drop, after a first tick that indexes it."""
    from dagster import build_sensor_context, instance_for_test

    from rt_assets.definitions import defs
    from rt_assets.sensors.dicom_drop_sensor import dicom_drop_sensor
    from rt_resources.resources import DataRoot, DicomDrop

    resources = {"data_root": DataRoot(path=str(data_root)), "dicom_drop": DicomDrop(path=str(drop))}
    seconds = []
    with instance_for_test() as instance:
        cursor = None
        for rep in range(REPEATS + 1):
            ctx = build_sensor_context(instance=instance, cursor=cursor, resources=resources, definitions=defs)
            sec, result = timed(lambda ctx=ctx: dicom_drop_sensor(ctx))
            cursor = result.cursor
            if rep:  # the first tick indexes the drop
                assert "(0 parsed this tick)" in result.skip_reason.skip_message, result.skip_reason
                seconds.append(sec)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=50, help="synthetic patients (~100 files each)")
    parser.add_argument("--keep", type=Path, help="write the drop and indexes here and keep them")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="rt-bench-"))
    drop, index_root = work / "drop", work / "index"  # index folders are never inside the drop
    try:
        print(f"CPUs: {os.cpu_count()}  Python {platform.python_version()}  pydicom {pydicom.__version__}")
        gen_s, _ = timed(lambda: write_cohort(drop, args.patients, OPTIONS))
        files = sorted(p for p in drop.rglob("*") if p.is_file())
        n = len(files)
        size_mb = sum(p.stat().st_size for p in files) / 1e6
        print(f"generated {n} files ({size_mb:.0f} MB, {args.patients} patients) in {gen_s:.1f} s (not compared)")

        for path in files:  # untimed warm-up: every method starts from the same page cache
            path.read_bytes()

        times: dict[str, list[float]] = {
            k: [] for k in ("full", "header", "cold1", "cold", "warm", "changed", "link", "tick")
        }
        index = scan = None
        for rep in range(REPEATS):  # interleaved rounds, so no method always runs first
            times["full"].append(timed(lambda: full_read(files))[0])
            times["header"].append(timed(lambda: header_read(files))[0])
            times["cold1"].append(timed(DropIndex(index_root / f"cold1-{rep}", drop, workers=1).scan)[0])
            index = DropIndex(index_root / f"cold-{rep}", drop)
            seconds, scan = timed(index.scan)
            assert len(scan.entries) == n and scan.n_parsed == n, (len(scan.entries), scan.n_parsed)
            times["cold"].append(seconds)

        for _ in range(REPEATS):
            seconds, again = timed(index.scan)
            assert again.n_parsed == 0, again.n_parsed
            times["warm"].append(seconds)

        parsed = []
        for rep in range(REPEATS):  # each repetition adds one new patient (~1-2% of the drop)
            write_patient(drop, args.patients + rep, OPTIONS)
            seconds, changed = timed(index.scan)
            parsed.append((changed.n_parsed, len(changed.entries)))
            times["changed"].append(seconds)

        for _ in range(REPEATS):
            seconds, linked = timed(lambda: link_courses(scan.entries, b"bench"))
            times["link"].append(seconds)

        times["tick"] = sensor_ticks(drop, work / "sensor-data")

        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["full"]
        rows = [
            ("naive full read (dcmread + pixel_array)", n, med["full"]),
            ("header-only read (stop_before_pixels)", n, med["header"]),
            ("indexer cold scan, 1 process", n, med["cold1"]),
            (f"indexer cold scan, {os.cpu_count()} processes (default)", n, med["cold"]),
            ("indexer rescan, nothing changed", n, med["warm"]),
        ]
        print(f"\n{'method (median of 3)':42} {'files':>6} {'seconds':>8} {'files/s':>9}  vs full read")
        for name, count, sec in rows:
            print(f"{name:42} {count:>6} {sec:>8.3f} {count / sec:>9.0f}  {ratio(base, sec)}")
        p_new, p_total = parsed[len(parsed) // 2]
        print(
            f"\nrescan after adding 1 patient: parsed {p_new} new of {p_total} files "
            f"(+{100 * p_new / (p_total - p_new):.1f}%) "
            f"in {med['changed']:.3f} s ({med['cold'] / med['changed']:.0f}x faster than the cold scan)"
        )
        print(
            f"rescan with nothing changed: parsed 0 files in {med['warm']:.3f} s "
            f"({med['cold'] / med['warm']:.0f}x faster than the cold scan)"
        )
        print(f"link_courses: {len(linked.courses)} courses from {n} entries in {med['link']:.3f} s")
        print(f"dicom_drop_sensor tick over the unchanged drop: {med['tick']:.3f} s (0 files parsed)")
        print(
            f"\nSummary: on {n} synthetic DICOM files ({os.cpu_count()} CPUs, warm page cache) the indexer's cold "
            f"scan took {med['cold']:.1f} s ({med['cold1']:.1f} s in one process) vs {base:.1f} s for a full "
            f"pydicom read ({ratio(base, med['cold'])}; one process {ratio(base, med['cold1'])}) and "
            f"{med['header']:.1f} s header-only; "
            f"an unchanged rescan took {med['warm']:.2f} s "
            f"({med['cold'] / med['warm']:.0f}x faster than cold), linking {len(linked.courses)} courses "
            f"took {med['link']:.2f} s, a sensor tick over the unchanged drop {med['tick']:.2f} s."
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
