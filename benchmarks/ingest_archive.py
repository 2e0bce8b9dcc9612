"""Benchmark: what a dicom_drop_sensor tick costs on a large archive, unchanged and after a change.

Builds a drop of ``--files`` files (default 100,000; run it again with ``--files 1000000``)
organised as an archive would be: folders of ``--per-folder`` files (default 50) under 20
top-level folders. The files are hard links to the files of a few synthetic courses
(``rt_resources.synthetic``), so the drop takes little disk; the index still holds one row per
path (each path is read and parsed once, by the cold scan). Hard links make every distinct file a
group of thousands of identical copies (one SOP Instance UID): the worst case for copies.

Printed: the cold scan (files per second), the first tick (builds the linked courses), the
index's size on disk, and this process's peak memory (the scan's readers are child processes,
their peak is printed too). Then, each the median of ``--repeats`` sensor ticks (a real Dagster
instance, as the daemon runs them, with the cursor carried over; quiet period 0, so nothing waits):

* (a) unchanged tick: the index is refreshed (with the process's inotify watch armed, no folder
  is stat-ed: :mod:`rt_resources.ingest.watch`) and, as nothing changed and no course waits, the
  tick ends there; (a-) the same without the watch (``RT_DROP_WATCH=0``, a network file system):
  one ``stat`` per folder;
* (a') the same tick when the periodic full re-stat falls due (``full_rescan_s`` passed);
* (b) the baseline: what a tick cost before the links were kept (every file re-stat-ed, every
  row loaded, every file linked into courses), measured here as those calls;
* (c) a tick after one file (a copy) was added to one folder: one folder listed, one file parsed,
  the copy's group of identical copies resolved again, no course linked again;
* (d) a tick after a new course (15 files, new UIDs) arrived in a folder of its own: that
  course alone is linked and requested.

Ratios are against (b), measured in the same run. The result is also written as JSON under
``benchmarks/results/`` (``ingest_archive_<files>_<N>core.json``; ``--out`` to choose).

    .venv/bin/python benchmarks/ingest_archive.py [--files N] [--per-folder N] [--keep DIR]

With ``--keep DIR`` an existing ``DIR/drop`` of the same size is reused (its index is removed,
so the cold scan is measured again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from rt_resources.ingest.index import DropIndex
from rt_resources.ingest.linking import link_courses
from rt_resources.synthetic import SynthOptions, write_patient

OPTIONS = SynthOptions(rows=32, slices=12, pixel_mm=10.0, slice_mm=5.0)  # 15 files a course
TOP_FOLDERS = 20
RESULTS = Path(__file__).resolve().parent / "results"


def ratio(base: float, sec: float) -> str:
    if sec == base:
        return "baseline"
    return f"{base / sec:.1f}x faster" if sec < base else f"{sec / base:.1f}x slower"


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_mib(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # kB on Linux


def build_drop(drop: Path, source: Path, n_files: int, per_folder: int, n_courses: int) -> int:
    """Hard-link the files of ``n_courses`` synthetic courses into folders of ``per_folder`` files."""
    for i in range(n_courses):
        write_patient(source, i, OPTIONS)
    pool = sorted(p for p in source.rglob("*") if p.is_file())
    n_folders = -(-n_files // per_folder)
    made = 0
    for f in range(n_folders):
        folder = drop / f"year_{f % TOP_FOLDERS:02d}" / f"export_{f:05d}"
        folder.mkdir(parents=True)
        for j in range(min(per_folder, n_files - made)):
            src = pool[(made + j) % len(pool)]
            os.link(src, folder / f"{j:03d}_{src.name}")
        made += min(per_folder, n_files - made)
    return n_folders


class Sensor:
    """dicom_drop_sensor ticks over one drop, the cursor carried over as the daemon does."""

    def __init__(self, instance, drop: Path, data_root: Path) -> None:
        self.instance, self.drop, self.data_root = instance, drop, data_root
        self.cursor: str | None = None
        self.requested: list[str] = []  #: partition keys of every run request, in order

    def tick(
        self, full_rescan_s: float = 3600.0, quiet_period_s: float = 0.0, watch: bool = True
    ) -> tuple[float, object]:
        from dagster import build_sensor_context

        from rt_assets.definitions import defs
        from rt_assets.sensors.dicom_drop_sensor import dicom_drop_sensor
        from rt_resources.resources import DataRoot, DicomDrop

        resources = {
            "data_root": DataRoot(path=str(self.data_root)),
            "dicom_drop": DicomDrop(
                path=str(self.drop), quiet_period_s=quiet_period_s, full_rescan_s=full_rescan_s, watch=watch
            ),
        }
        ctx = build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources, definitions=defs)
        seconds, result = timed(lambda: dicom_drop_sensor(ctx))
        self.cursor = result.cursor
        for req in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        self.requested += [r.partition_key for r in result.run_requests or []]
        return seconds, result


def message(result) -> str:
    return result.skip_reason.skip_message if result.skip_reason else f"{len(result.run_requests)} run requests"


def write_result(out: Path, result: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


def index_mib(index: DropIndex) -> float:
    return sum(p.stat().st_size for p in index.path.parent.glob(index.path.name + "*")) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000, help="files in the drop (hard links)")
    parser.add_argument("--per-folder", type=int, default=50, help="files per folder")
    parser.add_argument("--courses", type=int, default=4, help="distinct synthetic courses linked (15 files each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--keep", type=Path, help="write the drop and index here and keep them (reused if there)")
    parser.add_argument("--out", type=Path, help="JSON result (default results/ingest_archive_<files>_<N>core.json)")
    args = parser.parse_args()

    from dagster import instance_for_test

    work = args.keep or Path(tempfile.mkdtemp(prefix="rt-bench-archive-"))
    drop, data_root = work / "drop", work / "data"  # the index (data/index) is never inside the drop
    out = args.out or RESULTS / f"ingest_archive_{args.files}_{os.cpu_count()}core.json"
    try:
        print(f"CPUs: {os.cpu_count()}  Python {platform.python_version()}")
        shape = work / "shape.json"
        wanted = {"files": args.files, "per_folder": args.per_folder, "courses": args.courses}
        if drop.is_dir() and shape.exists() and json.loads(shape.read_text()) == wanted:
            n_folders = -(-args.files // args.per_folder)
            print(f"reusing the drop in {drop}")
            shutil.rmtree(data_root, ignore_errors=True)
            shutil.rmtree(drop / "arrivals", ignore_errors=True)  # left by ingest_arrival.py
            for added in drop.rglob("added_*"):
                added.unlink() if added.is_file() else shutil.rmtree(added)
        else:
            shutil.rmtree(work / "drop", ignore_errors=True)
            shutil.rmtree(work / "source", ignore_errors=True)
            build_s, n_folders = timed(
                lambda: build_drop(drop, work / "source", args.files, args.per_folder, args.courses)
            )
            shape.write_text(json.dumps(wanted))
            print(f"built the drop in {build_s:.1f} s (not compared)")
        print(
            f"drop: {args.files} files in {n_folders} folders of {args.per_folder} "
            f"(hard links to {args.courses * 15} distinct files)"
        )
        index = DropIndex(data_root / "index", drop)
        rss0 = peak_mib()
        cold_s, cold = timed(lambda: index.refresh(full_rescan_s=3600))
        assert cold.n_parsed == args.files and cold.n_files == args.files, cold
        rss_cold = peak_mib()
        print(
            f"cold scan (reads and parses every path once): {cold_s:.1f} s, {args.files / cold_s:.0f} files/s; "
            f"peak memory {rss_cold:.0f} MiB here (before: {rss0:.0f}), {peak_mib(resource.RUSAGE_CHILDREN):.0f} "
            "MiB in a reader process"
        )

        times: dict[str, list[float]] = {k: [] for k in ("quick", "nowatch", "restat", "full", "added", "course")}
        notes: dict[str, str] = {}
        with instance_for_test() as instance:
            sensor = Sensor(instance, drop, data_root)
            first_s, first = sensor.tick()  # no cursor yet: builds the links, looks at every course
            rss_first = peak_mib()
            settle_s, settle = sensor.tick()
            assert "drop unchanged" in message(settle), message(settle)
            print(
                f"first tick (builds the linked courses: {message(first)}): {first_s:.2f} s, peak memory "
                f"{rss_first:.0f} MiB; the next: {settle_s:.3f} s"
            )
            print(f"index on disk: {index_mib(index):.0f} MiB ({index.path.name} and its WAL)")
            source = sorted((work / "source").rglob("*.dcm")) if (work / "source").is_dir() else []
            for rep in range(args.repeats):  # interleaved rounds
                seconds, result = sensor.tick()
                assert "drop unchanged" in message(result), message(result)
                times["quick"].append(seconds)
                notes["quick"] = message(result)

                seconds, result = sensor.tick(watch=False)  # no inotify: a stat per folder
                assert "drop unchanged" in message(result), message(result)
                times["nowatch"].append(seconds)
                notes["nowatch"] = message(result)

                seconds, result = sensor.tick(full_rescan_s=0)  # the periodic full re-stat is due
                assert "drop unchanged" in message(result) and "full re-stat" in message(result), message(result)
                times["restat"].append(seconds)

                def full_tick():  # the baseline: re-stat everything, load every row, link every file
                    index.refresh(full_rescan_s=0)
                    entries = sorted(index.load().values(), key=lambda e: e.path)
                    return link_courses(entries, b"bench")

                seconds, linked = timed(full_tick)
                times["full"].append(seconds)
                notes["full"] = f"{len(linked.courses)} courses, {len(linked.rejections)} files refused"

                k = (997 * rep + 13) % n_folders
                folder = drop / f"year_{k % TOP_FOLDERS:02d}" / f"export_{k:05d}"
                src = next(folder.iterdir())
                os.link(src, folder / f"added_{rep}.dcm")
                seconds, result = sensor.tick()
                assert "(1 parsed this tick; 0 linked again)" in message(result), message(result)
                times["added"].append(seconds)
                notes["added"] = message(result)
                sensor.tick()  # the changed folder is listed once more

                new = drop / f"added_course_{rep}"  # a course of its own (new UIDs) arrives
                write_patient(new, 1000 + rep, OPTIONS)
                seconds, result = sensor.tick()
                assert len(result.run_requests or []) == 1, message(result)
                times["course"].append(seconds)
                notes["course"] = message(result)
                sensor.tick()
            rss_end = peak_mib()
            del source

        med = {k: statistics.median(v) for k, v in times.items()}
        base = med["full"]
        rows = [
            ("(a) unchanged tick (inotify watch)", med["quick"]),
            ("(a-) unchanged tick, no watch: stat per folder", med["nowatch"]),
            ("(a') unchanged tick, full re-stat due", med["restat"]),
            ("(b) baseline: re-stat, load, link every file", med["full"]),
            ("(c) tick after adding 1 copy to 1 folder", med["added"]),
            ("(d) tick after a new course (15 files)", med["course"]),
        ]
        n = args.files
        print(f"\n{'sensor tick (median of ' + str(args.repeats) + ')':46} {'seconds':>8}  vs (b)")
        for name, sec in rows:
            print(f"{name:46} {sec:>8.3f}  {ratio(base, sec)}")
        print(
            f"\n(a) said: {notes['quick']}\n(a-) said: {notes['nowatch']}\n(b) gave: {notes['full']}"
            f"\n(c) said: {notes['added']}"
        )
        print(f"(d) said: {notes['course']}")
        print(
            f"\nSummary: on {n} files in {n_folders} folders ({os.cpu_count()} CPUs, warm caches) an unchanged "
            f"sensor tick took {med['quick']:.3f} s ({med['nowatch']:.3f} s without inotify), "
            f"{med['restat']:.2f} s when the hourly full re-stat falls due, "
            f"{med['added']:.3f} s after one file was added and {med['course']:.3f} s after a new course arrived "
            f"({ratio(base, med['course'])} than re-linking every file, {base:.2f} s). Cold scan "
            f"{n / cold_s:.0f} files/s; index {index_mib(index):.0f} MiB on disk; peak memory {rss_end:.0f} MiB."
        )
        result = {
            "benchmark": "ingest_archive",
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "files": n,
            "folders": n_folders,
            "distinct_files": args.courses * 15,
            "cold_scan_s": round(cold_s, 2),
            "cold_scan_files_per_s": round(n / cold_s),
            "index_mib": round(index_mib(index), 1),
            "peak_rss_mib": {"cold_scan": round(rss_cold), "first_tick": round(rss_first), "end": round(rss_end)},
            "first_tick_s": round(first_s, 3),
            "settle_tick_s": round(settle_s, 3),
            "median_s": {k: round(v, 4) for k, v in med.items()},
            "all_s": {k: [round(x, 4) for x in v] for k, v in times.items()},
            "vs_baseline": {k: round(base / v, 1) for k, v in med.items()},
            "targets": {"unchanged_tick_s": 0.1, "tick_after_one_added_file_s": 0.5},
            "watch": "inotify armed for (a), (a'), (c), (d); off for (a-)",
            "meets": {"unchanged_tick": med["quick"] <= 0.1, "tick_after_one_added_file": med["added"] <= 0.5},
        }
        write_result(out, result)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
