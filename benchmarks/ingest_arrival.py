"""Benchmark: sensor ticks while courses keep arriving in a large archive.

A drop of ``--files`` files (default 100,000, hard links as in ``ingest_archive.py``) is indexed
and its courses requested. Then, for ``--minutes`` minutes (default 3), a writer thread adds a new
course (15 files, its own UIDs) every ``--every`` seconds (default 3), copying its files one by
one over about a second into a folder of its own, as an export or the receiver would. Meanwhile
the dicom_drop_sensor ticks every ``--interval`` seconds (default 1; the daemon's default is 30)
with a quiet period of ``--quiet`` seconds (default 5), on a real Dagster instance with the
cursor carried over, and this process's inotify watch (as the daemon's code server keeps it).

Printed and written to ``benchmarks/results/ingest_arrival_<N>core.json``: every tick's time
(median and 95th percentile for each third of the run: flat when a tick costs what changed, not
the archive or the number of courses so far), whether any course was requested twice, whether
every arrived course was requested, and the delay from a course's last file to its request
(the quiet period plus at most a tick or two).

    PYTHONPATH=. .venv/bin/python benchmarks/ingest_arrival.py [--files N] [--minutes M] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from benchmarks.ingest_archive import OPTIONS, Sensor, build_drop, message, timed, write_result
from rt_resources.ingest.index import DropIndex
from rt_resources.synthetic import write_patient

RESULTS = Path(__file__).resolve().parent / "results"


class Writer(threading.Thread):
    """Adds a course every ``every`` seconds until stopped; records when each course's last file landed."""

    def __init__(self, drop: Path, staging: Path, every: float) -> None:
        super().__init__(daemon=True)
        self.drop, self.staging, self.every = drop, staging, every
        self.stop = threading.Event()
        self.landed: dict[str, float] = {}  #: patient folder -> time its last file was in place
        self.patient_ids: dict[str, str] = {}

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            started = time.monotonic()
            name = f"patient_{5000 + n:03d}"
            patient = write_patient(self.staging, 5000 + n, OPTIONS)
            files = sorted(p for p in patient.folder.rglob("*") if p.is_file())
            for i, src in enumerate(files):  # one by one, ~1 s in all, each written whole then renamed
                dest = self.drop / "arrivals" / src.relative_to(self.staging)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dest.with_suffix(".part"))
                os.replace(dest.with_suffix(".part"), dest)
                if i % 3 == 2:
                    time.sleep(0.2)
            self.landed[name] = time.time()
            self.patient_ids[patient.patient_id] = name
            n += 1
            self.stop.wait(max(0.0, self.every - (time.monotonic() - started)))


def thirds(values: list[float]) -> list[dict[str, float]]:
    k = max(1, len(values) // 3)
    parts = [values[:k], values[k : 2 * k], values[2 * k :]]
    return [
        {"median_s": round(statistics.median(p), 4), "p95_s": round(sorted(p)[int(0.95 * (len(p) - 1))], 4)}
        for p in parts
        if p
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--per-folder", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between arriving courses")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between sensor ticks")
    parser.add_argument("--quiet", type=float, default=5.0, help="quiet period (s)")
    parser.add_argument("--keep", type=Path, help="work folder kept (drop reused when the same size)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from dagster import instance_for_test

    work = args.keep or Path(tempfile.mkdtemp(prefix="rt-bench-arrival-"))
    drop, data_root = work / "drop", work / "data"
    out = args.out or RESULTS / f"ingest_arrival_{os.cpu_count()}core.json"
    try:
        shape = work / "shape.json"
        wanted = {"files": args.files, "per_folder": args.per_folder, "courses": 4}
        shutil.rmtree(data_root, ignore_errors=True)
        shutil.rmtree(drop / "arrivals", ignore_errors=True)
        shutil.rmtree(work / "staging", ignore_errors=True)
        if not (drop.is_dir() and shape.exists() and json.loads(shape.read_text()) == wanted):
            shutil.rmtree(drop, ignore_errors=True)
            shutil.rmtree(work / "source", ignore_errors=True)
            build_drop(drop, work / "source", args.files, args.per_folder, 4)
            shape.write_text(json.dumps(wanted))
        for added in drop.rglob("added_*"):
            added.unlink() if added.is_file() else shutil.rmtree(added)
        cold_s, _ = timed(lambda: DropIndex(data_root / "index", drop).refresh(full_rescan_s=3600))
        print(f"CPUs: {os.cpu_count()}  Python {platform.python_version()}")
        print(f"archive: {args.files} files, cold scan {cold_s:.1f} s (not compared)")

        with instance_for_test() as instance:
            sensor = Sensor(instance, drop, data_root)
            sensor.tick(quiet_period_s=0)  # the archive's courses: requested, links built, watch armed
            sensor.tick(quiet_period_s=0)
            archive_keys = list(sensor.requested)
            writer = Writer(drop, work / "staging", args.every)
            requested_at: dict[str, float] = {}
            ticks: list[float] = []
            notes: list[str] = []
            writer.start()
            end = time.monotonic() + args.minutes * 60
            drain_until = None
            while True:
                now = time.monotonic()
                if now >= end and drain_until is None:
                    writer.stop.set()
                    writer.join()
                    drain_until = time.monotonic() + args.quiet + 30
                if drain_until is not None and (now >= drain_until or len(requested_at) >= len(writer.landed)):
                    break
                before = len(sensor.requested)
                seconds, result = sensor.tick(quiet_period_s=args.quiet)
                ticks.append(seconds)
                notes.append(message(result))
                for key in sensor.requested[before:]:
                    requested_at.setdefault(key, time.time())
                time.sleep(max(0.0, args.interval - seconds))

        keys = sensor.requested[len(archive_keys) :]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        arrived = len(writer.landed)
        from rt_resources.ingest.survey import link_store

        store = link_store(drop, data_root, data_root / "index")
        by_patient = {c.patient_id: c.key for c in store.courses()}
        delays = []
        missing = []
        for patient_id, folder in writer.patient_ids.items():
            key = by_patient.get(patient_id)
            if key in requested_at:
                delays.append(requested_at[key] - writer.landed[folder])
            else:
                missing.append(folder)
        parts = thirds(ticks)
        print(f"\n{arrived} courses arrived in {args.minutes:g} min, one every {args.every:g} s; {len(ticks)} ticks")
        for name, part in zip(("first third", "second third", "last third"), parts, strict=False):
            print(f"  ticks, {name:13}: median {part['median_s']:.3f} s, p95 {part['p95_s']:.3f} s")
        print(f"  slowest tick: {max(ticks):.3f} s")
        print(f"  requested twice: {twice or 'none'}; never requested: {missing or 'none'}")
        if delays:
            print(
                f"  last file -> request: median {statistics.median(delays):.1f} s, max {max(delays):.1f} s "
                f"(quiet period {args.quiet:g} s, a tick every {args.interval:g} s)"
            )
        flat = parts[-1]["median_s"] <= 1.5 * parts[0]["median_s"] + 0.005
        print(
            f"\nSummary: {arrived} courses arrived into a {args.files}-file archive over {args.minutes:g} min; "
            f"tick median {parts[0]['median_s']:.3f} s in the first third and {parts[-1]['median_s']:.3f} s in the "
            f"last ({'flat' if flat else 'NOT flat'}); {len(twice)} requested twice, {len(missing)} never requested."
        )
        result = {
            "benchmark": "ingest_arrival",
            "date": time.strftime("%Y-%m-%d"),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "archive_files": args.files,
            "minutes": args.minutes,
            "every_s": args.every,
            "tick_interval_s": args.interval,
            "quiet_period_s": args.quiet,
            "courses_arrived": arrived,
            "ticks": len(ticks),
            "tick_thirds": parts,
            "slowest_tick_s": round(max(ticks), 4),
            "requested_twice": twice,
            "never_requested": missing,
            "delay_last_file_to_request_s": {
                "median": round(statistics.median(delays), 2) if delays else None,
                "max": round(max(delays), 2) if delays else None,
            },
            "flat": flat,
            "all_ticks_s": [round(t, 4) for t in ticks],
        }
        write_result(out, result)
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
