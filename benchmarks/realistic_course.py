"""Benchmark: the real workload. A clinical-size course (512 x 512 x 160 CT, 0.977 x 2.5 mm; the
synthetic REALISTIC preset) with ~100 automatically segmented organs (the stand-in segmentation:
the real worker, GPU step, lease and output layout; its "inference" a configurable sleep).

Three parts, in one invocation, on this machine:

1. **Stages of one course**: each course asset materialized alone, in process, in pipeline order
   (the same asset code the runs execute): wall seconds and CPU core-seconds (this process plus
   its reaped children, e.g. the radiomics pool; the segmentation worker's own CPU read from /proc).
   Radiomics twice: with the default ROI policy and with the full set on every ROI.
2. **RTSTRUCT export** of that course's automatic organs, side by side in the same run: today's
   function at commit 8fd045e (loaded from git), rt-utils' own writer, and ours
   (benchmarks/rtstruct_export.py).
3. **A queue of N courses through `rtpipeline run`** (the run queue and its daemon, as a user runs
   it), stand-in inference of S seconds: the GPU slot's duty cycle (seconds in model inference /
   wall seconds from the first inference's start to the last one's end, from the worker's
   inference log), courses per hour, and a projection of courses per day for one GPU plus C cores.

    .venv/bin/python benchmarks/realistic_course.py [--courses 6] [--inference-s 20] [--parts 1,2,3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: Dagster's console log at WARNING: the stage lines stay readable
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children."""
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _proc_cpu_s(pid: int) -> float:
    """CPU seconds of a process that is not our child (the segmentation worker), from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stages_of_one_course(
    work: Path, inference_s: float, workers: int, policies: tuple[str, ...] = ("default", "full")
) -> tuple[list[dict], Path, str]:
    """Materialize each course asset alone; [(asset, wall_s, cpu_s, note)], the data root and the course key."""
    from dagster import AssetKey, DagsterInstance, materialize

    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop
    from rt_resources.resources import resources_from_settings
    from rt_resources.segmentation.worker import socket_path
    from rt_resources.settings import load_settings
    from rt_resources.synthetic import REALISTIC, write_patient

    drop, data = work / "one" / "drop", work / "one" / "data"
    start = time.perf_counter()
    write_patient(drop, 0, REALISTIC)
    print(f"  wrote one realistic course in {time.perf_counter() - start:.1f} s", flush=True)
    ts = {"backend": "standin", "standin_seconds": inference_s, "device": "cpu", "worker_idle_s": 120}
    overrides = {"data_root": str(data), "drop_root": str(drop), "workers": workers, "totalsegmentator": ts}
    settings = load_settings(environ={}, overrides=overrides)
    defs = _unbound_assets()
    resources = resources_from_settings(settings)
    (key,) = [c.key for c in survey_drop(drop, data).courses]
    rows = []
    (work / "one" / "dagster").mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(str(work / "one" / "dagster"))
    instance.add_dynamic_partitions(course_partitions.name, [key])
    order = [
        "course_manifest",
        "ct_image",
        "dose_grid",
        "structure_masks",
        "totalseg_input",
        "totalseg_inference",
        "totalseg_masks",
        "totalseg_rtstruct",
        "custom_structures",
        "dvh",
        "dvh_eqd2",
        "contour_agreement",
        "radiomics",
        "course_preview",
    ]
    worker_cpu = 0.0
    if "default" not in policies:
        order.remove("radiomics")
    if not policies:  # the RTSTRUCT comparison needs the course's masks only
        order = order[: order.index("totalseg_rtstruct")]
    for name in order:
        assets_def = defs[name]
        pid_file = socket_path(data / "index", "cpu").with_suffix(".pid")
        before_worker = _proc_cpu_s(int(pid_file.read_text())) if pid_file.exists() else 0.0
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        result = materialize([assets_def], partition_key=key, instance=instance, resources=resources, run_config=QUIET)
        wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
        assert result.success, name
        note = ""
        if name == "totalseg_inference":
            mat = instance.fetch_materializations(AssetKey(name), limit=1).records[0].asset_materialization
            worker_cpu = _proc_cpu_s(int(pid_file.read_text())) - before_worker
            note = (
                f"inference {mat.metadata['inference_s'].value:.1f} s (stand-in sleep {inference_s:.0f} s), "
                f"worker CPU {worker_cpu:.1f} s, model load {mat.metadata['load_s'].value:.1f} s"
            )
            cpu += worker_cpu
        if name == "totalseg_masks":
            mat = instance.fetch_materializations(AssetKey(name), limit=1).records[0].asset_materialization
            note = f"{mat.metadata['n_non_empty'].value} organs, {mat.metadata['volume_cc_total'].value / 1000:.1f} L"
        if name == "radiomics":
            mat = instance.fetch_materializations(AssetKey(name), limit=1).records[0].asset_materialization
            note = "default policy; " + _core_seconds_note(mat.metadata)
        rows.append({"asset": name, "wall_s": wall, "cpu_s": cpu, "note": note})
        print(f"  {name:<20} {wall:8.1f} s wall {cpu:8.1f} core-s  {note}", flush=True)

    if "full" in policies:
        # a new resource from settings (Dagster builds a run's resources from their config, not the object)
        every_roi = load_settings(environ={}, overrides={**overrides, "radiomics": {"policy": "full"}})
        full = {**resources, "radiomics_config": resources_from_settings(every_roi)["radiomics_config"]}
        cpu0, wall0 = _cpu_s(), time.perf_counter()
        assert materialize(
            [defs["radiomics"]], partition_key=key, instance=instance, resources=full, run_config=QUIET
        ).success
        wall, cpu = time.perf_counter() - wall0, _cpu_s() - cpu0
        mat = instance.fetch_materializations(AssetKey("radiomics"), limit=1).records[0].asset_materialization
        note = "full set on every ROI; " + _core_seconds_note(mat.metadata)
        rows.append({"asset": "radiomics (full)", "wall_s": wall, "cpu_s": cpu, "note": note})
        print(f"  {'radiomics (full)':<20} {wall:8.1f} s wall {cpu:8.1f} core-s  {note}", flush=True)
    return rows, data, key


def _unbound_assets() -> dict:
    """The course assets by name, as the asset modules define them (no resources bound)."""
    from dagster import AssetsDefinition, load_assets_from_package_module

    from rt_assets.assets import course, derived, segmentation

    found = {}
    for package in (course, segmentation, derived):
        for a in load_assets_from_package_module(package):
            if isinstance(a, AssetsDefinition) and len(a.keys) == 1:
                found[a.key.to_user_string()] = a
    return found


def _core_seconds_note(metadata) -> str:
    entry = metadata.get("core_seconds")
    if entry is None:
        return ""
    value = entry.value

    def fmt(groups: dict) -> str:
        return ", ".join(f"{k}: {v['n_rois']} ROIs {v['cpu_s']:.0f} s" for k, v in groups.items() if v["n_rois"])

    sizes, sets = fmt(value["by_size"]), fmt(value["by_param_set"])
    return f"extraction core-s {value['total_s']:.0f}; by ROI size [{sizes}]; by set [{sets}]"


def rtstruct_side_by_side(data: Path, key: str, workers: int, baseline_subset: int) -> dict:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from rtstruct_export import compare_exports, report

    from rt_resources.course_paths import CoursePaths
    from rt_resources.dicom.sop_classes import Kind
    from rt_resources.ingest.manifest import read_manifest, source_files
    from rt_resources.structures.masks import mask_index

    paths = CoursePaths.under(data, key)
    masks = {m["roi_name"]: m["path"] for m in mask_index(paths.masks("totalseg"))}
    manifest = read_manifest(paths.root)
    ct_files = [Path(f.abspath) for f in source_files(manifest, Kind.CT, manifest.ct_series_uid)]
    result = compare_exports(masks, ct_files, paths.ct, workers, baseline_subset=baseline_subset)
    print(report(result, "the realistic course's stand-in organs"), flush=True)
    return result


def queue(work: Path, n: int, inference_s: float, workers: int, radiomics_params: str | None = None) -> dict:
    """N realistic courses through `rtpipeline run`; duty cycle from the worker's inference log."""
    from rt_resources.segmentation.worker import read_inference_log
    from rt_resources.synthetic import REALISTIC, write_patient

    drop, out = work / "queue" / "drop", work / "queue" / "out"
    for i in range(n):
        write_patient(drop, i, REALISTIC)
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    env.update(RT_SITE_SECRET="benchmark-secret", RT_SEG_WORKER_IDLE_S="120")
    args = ["run", "--dicom-root", str(drop), "--outdir", str(out), "--workers", str(workers)]
    args += ["--totalseg-backend", "standin", "--totalseg-standin-s", str(inference_s), "--totalseg-device", "cpu"]
    if radiomics_params:
        args += ["--radiomics-params", radiomics_params]
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "rt_assets.cli", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"rtpipeline run exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    log = sorted(read_inference_log(out / "index"), key=lambda r: r["started_at"])
    busy = sum(r["inference_s"] for r in log)
    span = log[-1]["ended_at"] - log[0]["started_at"]
    gaps = [b["started_at"] - a["ended_at"] for a, b in zip(log, log[1:], strict=False)]
    return {
        "courses": n,
        "wall_s": wall,
        "inferences": len(log),
        "inference_busy_s": busy,
        "span_s": span,
        "duty_cycle": busy / span if span else float("nan"),
        "gaps_s": [round(g, 2) for g in gaps],
        "courses_per_hour": n / wall * 3600,
        "summary": next((line for line in proc.stdout.splitlines() if " processed, " in line), "?"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--courses", type=int, default=6, help="courses in the queue (part 3)")
    parser.add_argument("--inference-s", type=float, default=20.0, help="the stand-in's inference seconds")
    parser.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1), help="--workers")
    parser.add_argument("--baseline-subset", type=int, default=12, help="masks the old export is timed on")
    parser.add_argument("--parts", default="1,2,3", help="which parts to run (comma-separated)")
    parser.add_argument("--radiomics-policies", default="default,full", help="part 1: radiomics under these policies")
    parser.add_argument("--queue-radiomics-params", help="part 3 only: another radiomics parameter file")
    parser.add_argument("--project-cores", type=int, default=16, help="C of the courses-per-day projection")
    parser.add_argument("--keep", type=Path, help="work here and keep it (default: a temporary folder)")
    args = parser.parse_args()
    print(f"# .venv/bin/python benchmarks/realistic_course.py {' '.join(sys.argv[1:])}".rstrip(), end="")
    print(f"   ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores)", flush=True)
    work = args.keep or Path(tempfile.mkdtemp(prefix="rt-realistic-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("RT_SITE_SECRET", "benchmark-secret")
    parts = {int(v) for v in args.parts.split(",")}
    result: dict = {}
    try:
        if parts & {1, 2}:
            print("\n## 1. stages of one realistic course (each asset alone, in process)", flush=True)
            policies = tuple(args.radiomics_policies.split(",")) if 1 in parts else ()  # part 2 needs the masks only
            rows, data, key = stages_of_one_course(work, args.inference_s, args.workers, policies)
            result["stages"] = rows
        if 1 in parts:
            # the course's total with one radiomics line: the default policy's where it ran, else the full set's
            default = any(r["asset"] == "radiomics" for r in rows)
            full = any(r["asset"] == "radiomics (full)" for r in rows)
            counted = "radiomics" if default else "radiomics (full)"
            course_cpu = sum(
                r["cpu_s"] for r in rows if not r["asset"].startswith("radiomics") or r["asset"] == counted
            )
            gpu_cpu = next(r for r in rows if r["asset"] == "totalseg_inference")["cpu_s"]
            which = (
                "default radiomics policy"
                if default
                else "the full radiomics set on every ROI"
                if full
                else "without radiomics (--radiomics-policies none)"
            )
            print(f"  total: {course_cpu:.0f} core-s per course ({which})")
            cpu_other = course_cpu - gpu_cpu
            per_day_gpu = 86400 / args.inference_s
            per_day_cpu = 86400 * args.project_cores / cpu_other
            result["projection"] = {"gpu_bound": per_day_gpu, "cpu_bound": per_day_cpu}
            print(
                f"\n## projection: one GPU + {args.project_cores} cores\n"
                f"  GPU-bound: 86400 s / {args.inference_s:.0f} s inference = {per_day_gpu:.0f} courses/day; "
                f"CPU-bound: 86400 s x {args.project_cores} cores / {cpu_other:.0f} core-s per course (part 1, "
                f"{which}, without the inference step) = {per_day_cpu:.0f} courses/day -> "
                f"{min(per_day_gpu, per_day_cpu):.0f} courses/day (the smaller; assumes the CPU stages overlap "
                "inference, as the queue in part 3 shows, and core-seconds that scale linearly with cores)",
                flush=True,
            )
        if 2 in parts:
            print("\n## 2. RTSTRUCT export of the course's automatic organs, side by side", flush=True)
            result["rtstruct"] = rtstruct_side_by_side(data, key, args.workers + 1, args.baseline_subset)
        if 3 in parts:
            print(f"\n## 3. {args.courses} realistic courses queued through rtpipeline run", flush=True)
            q = queue(work, args.courses, args.inference_s, args.workers, args.queue_radiomics_params)
            result["queue"] = q
            print(
                f"  {q['summary']}; wall {q['wall_s']:.0f} s = {q['courses_per_hour']:.1f} courses/hour here\n"
                f"  GPU slot duty cycle: {q['duty_cycle'] * 100:.1f} % ({q['inference_busy_s']:.0f} s of inference "
                f"in {q['span_s']:.0f} s from the first inference's start to the last one's end; gaps {q['gaps_s']})"
            )
        (work / "realistic_course.json").write_text(json.dumps(result, indent=1, default=str))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
