"""Benchmark: `rtpipeline run` again on the same drop; only what changed runs.

In one invocation, on this machine, each step as a user runs it (`rtpipeline run` in a fresh
process, its own daemon started and stopped, wall time of the whole command, indexing included):

1. first run: the demo's drop (3 patients, primary + boost, a second course, MR: 6 courses);
2. unchanged re-run of the same drop (target: at most 5 % of the first run);
3. re-run after one more course lands in the drop (target: at most 1.5x a single-course run);
4. baseline for 3: that one course alone into a fresh output folder (same command).

    .venv/bin/python benchmarks/rerun.py [--patients 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "rt_resources" / "radiomics" / "params" / "CT_demo.yaml"


def rtpipeline(*args: str, env: dict) -> tuple[float, str]:
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rt_assets.cli", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        tail = proc.stdout[-3000:] + "\n" + proc.stderr[-3000:]
        raise RuntimeError(f"rtpipeline {' '.join(args)} exited {proc.returncode}:\n{tail}")
    return wall, proc.stdout


def summary_line(stdout: str) -> str:
    return next((line for line in stdout.splitlines() if " processed, " in line), "?")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=3, help="patients of the first drop (2 courses each)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary one, removed)")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rt-rerun-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "RT_SITE_SECRET": "benchmark-secret", "RT_RADIOMICS_PARAMS": str(PARAMS)}
    env.pop("DAGSTER_HOME", None)
    try:
        drop, extra = work / "drop", work / "extra"
        rtpipeline(
            "synth", "--out", str(drop), "--patients", str(args.patients), "--boost", "--second-course", "--mr", env=env
        )
        # one more patient, one course, with its own seed so its UIDs differ from the drop's
        rtpipeline("synth", "--out", str(extra), "--patients", "1", "--boost", "--mr", "--seed", "4242", env=env)
        run = ("run", "--dicom-root")
        rows = []
        first, out = rtpipeline(*run, str(drop), "--outdir", str(work / "out"), env=env)
        rows.append(("first run", first, summary_line(out)))
        again, out = rtpipeline(*run, str(drop), "--outdir", str(work / "out"), env=env)
        rows.append(("unchanged re-run", again, summary_line(out)))
        for folder in extra.iterdir():
            shutil.copytree(folder, drop / f"new-{folder.name}")
        added, out = rtpipeline(*run, str(drop), "--outdir", str(work / "out"), env=env)
        rows.append(("re-run, one course added", added, summary_line(out)))
        single, out = rtpipeline(*run, str(extra), "--outdir", str(work / "single"), env=env)
        rows.append(("that course alone, fresh", single, summary_line(out)))

        print(f"\n{os.cpu_count()} CPUs; drop of {args.patients} patients; radiomics {PARAMS.name}\n")
        print(f"{'step':28} {'wall s':>8}  courses")
        for label, wall, line in rows:
            print(f"{label:28} {wall:8.1f}  {line}")
        print(f"\nunchanged re-run / first run:      {again / first:6.1%}  (target <= 5 %)")
        print(f"one added course / single course:  {added / single:6.2f}x (target <= 1.5x)")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
