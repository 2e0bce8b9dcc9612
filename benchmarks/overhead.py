"""Benchmark: one course through the Dagster graph vs the same engine calls in a plain loop.

A synthetic course with a realistic CT (256 x 256 x 120 slices, 2 x 2 x 3 mm, primary + boost
plan, 8 ROIs) is written once. Then, each in a fresh Python process (so imports count the same
way for both), measured in the same run:

* ``plain``: the engine functions each course asset calls (manifest, CT volume, total dose,
  masks, DVH, radiomics, MR, preview, QC checks), in a loop, no Dagster;
* ``rtpipeline run``: the whole command as a user runs it on a one-course drop: indexing, the
  plan, the daemon it starts, the course run submitted to the run queue and launched by the daemon
  in its own worker process, the cohort tables, the summary. Reported twice: the command's wall
  time, and the course run alone (from its RUN_ENQUEUED to its RUN_SUCCESS event: the queue, the
  launch, the worker's start-up and the steps), which is what each further course costs;
* ``dagster in-process``: ``course_job`` for the partition with the in-process executor on a
  persistent SQLite instance, in this process (what a run's worker does on a 2-core machine,
  without the queue and the launch);
* ``multiprocess, forkserver``: the code location's job with the multiprocess executor forced
  (``RT_STEP_EXECUTOR=multiprocess``; the default with two or more step workers): one process
  per step, forked from a forkserver with the code preloaded;
* ``multiprocess, spawn``: the same with Dagster's default start method (each step process
  imports everything again), to show why the project uses the forkserver.

Each is repeated ``--repeat`` times (median reported). The report gives the ratio to the plain
loop and where Dagster's extra time goes: the process's imports, run setup before the first
step, the sum of step times (compute + Dagster's per-step work), the gap between steps, and
the number of events written.

    .venv/bin/python benchmarks/overhead.py [--repeat 3] [--rows 256 --slices 120]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "rt_resources" / "radiomics" / "params" / "CT_demo.yaml"
SECRET = "benchmark-secret"


def plain_loop(drop: Path, out: Path, params: Path) -> dict:
    """The engine calls of the course assets, in order, without Dagster."""
    t0 = time.perf_counter()
    import SimpleITK as sitk

    from rt_resources.course_paths import CoursePaths
    from rt_resources.dicom.sop_classes import Kind
    from rt_resources.dose.course import DOSE_FILE, DOSE_INFO_FILE, course_total_dose, dose_info
    from rt_resources.dvh.course import course_dvh
    from rt_resources.fileio import write_atomic, write_json_atomic, write_parquet_atomic
    from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
    from rt_resources.imaging.mr_course import course_mr_images
    from rt_resources.ingest.manifest import build_manifest, primary_structure_set, source_files, write_manifest
    from rt_resources.ingest.survey import survey_drop
    from rt_resources.parallel import default_pool_workers
    from rt_resources.qc.dose import dose_coverage, dose_units, dvh_sanity
    from rt_resources.qc.geometry import ct_geometry, frame_of_reference
    from rt_resources.qc.previews.dvh_plot import dvh_plot_png
    from rt_resources.qc.previews.montage import ct_montage_png
    from rt_resources.qc.radiomics import radiomics_nan
    from rt_resources.qc.structures import mask_vs_contour_volume, structure_boundary
    from rt_resources.radiomics.course import course_radiomics
    from rt_resources.radiomics.engine import RadiomicsSettings
    from rt_resources.structures.masks import ROI_INDEX_FILE, write_masks
    from rt_resources.structures.rtstruct import read_rois

    t_import = time.perf_counter() - t0
    stages: dict[str, float] = {}

    def stage(name, fn):
        start = time.perf_counter()
        result = fn()
        stages[name] = time.perf_counter() - start
        return result

    survey = stage("survey", lambda: survey_drop(drop, out))
    course = survey.courses[0]
    cdir = out / "courses" / course.key
    manifest = stage("course_manifest", lambda: build_manifest(course, drop))
    write_manifest(cdir, manifest)

    def ct():
        files = source_files(manifest, Kind.CT, manifest.ct_series_uid)
        image = read_ct_volume(validate_ct_series([f.abspath for f in files]))
        write_atomic(cdir / "ct.nii.gz", lambda tmp: sitk.WriteImage(image, str(tmp), True))
        frame_of_reference(manifest)
        ct_geometry(manifest)
        return image

    image = stage("ct_image", ct)

    def dose():
        total, plans, _ = course_total_dose(
            source_files(manifest, Kind.RTPLAN), source_files(manifest, Kind.RTDOSE), manifest
        )
        write_json_atomic(cdir / DOSE_INFO_FILE, dose_info(total, plans))
        img = sitk.Cast(total.image, sitk.sitkFloat32)
        write_atomic(cdir / DOSE_FILE, lambda tmp: sitk.WriteImage(img, str(tmp), True))
        dose_units(cdir)
        return total

    total = stage("dose_grid", dose)
    uid = primary_structure_set(manifest)
    struct = [f for f in source_files(manifest, Kind.RTSTRUCT) if f.sop_instance_uid == uid][0]

    def masks():
        rois = read_rois(struct.abspath)
        folder = cdir / "masks" / "manual"
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / ROI_INDEX_FILE, write_masks(rois, image, folder))
        structure_boundary(cdir / "ct.nii.gz", folder)
        mask_vs_contour_volume(rois, folder, image.GetSpacing()[2])
        return rois

    rois = stage("structure_masks", masks)
    stage("mr_images", lambda: course_mr_images(manifest, CoursePaths(cdir)))

    def dvh():
        m, c, _ = course_dvh(
            course.key,
            cdir / DOSE_FILE,
            rois,
            cdir / "masks",
            total.prescription_gy,
            image.GetSpacing()[2],
            workers=default_pool_workers(),
        )
        write_parquet_atomic(cdir / "dvh_metrics.parquet", m)
        write_parquet_atomic(cdir / "dvh_curves.parquet", c)
        dose_coverage(cdir / DOSE_FILE, cdir / "masks" / "manual")
        dvh_sanity(m)
        dvh_plot_png(c, cdir / "preview" / "dvh.png", prescription_gy=total.prescription_gy)

    stage("dvh", dvh)

    def radiomics():
        settings = RadiomicsSettings(params=params)
        table, _ = course_radiomics(
            cdir / "ct.nii.gz", cdir / "masks", course.key, settings, default_pool_workers(), mr_root=cdir / "mr"
        )
        write_parquet_atomic(cdir / "radiomics.parquet", table)
        radiomics_nan(table)

    stage("radiomics", radiomics)
    stage(
        "course_preview",
        lambda: ct_montage_png(
            cdir / "ct.nii.gz",
            cdir / "preview" / "ct_montage.png",
            manual_masks_dir=cdir / "masks" / "manual",
            dose_path=cdir / DOSE_FILE,
            prescription_gy=total.prescription_gy,
        ),
    )
    return {"import_s": t_import, "stages": stages}


def dagster_run(drop: Path, out: Path, mode: str) -> dict:
    """course_job for the course's partition on the instance in $DAGSTER_HOME; step timings from its events."""
    t0 = time.perf_counter()
    from dagster import DagsterEventType, DagsterInstance, execute_job
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    import rt_assets.definitions  # noqa: F401  (the code location, as a run process loads it)
    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop

    t_import = time.perf_counter() - t0
    key = survey_drop(drop, out).courses[0].key
    instance = DagsterInstance.get()
    instance.add_dynamic_partitions(course_partitions.name, [key])
    # the code location's own job, as a run worker loads it; one step worker = the in-process executor
    job = ReconstructableRepository.for_module("rt_assets.definitions", "defs", str(ROOT)).get_reconstructable_job(
        "course_job"
    )
    config = {"loggers": {"console": {"config": {"log_level": "ERROR"}}}}
    if mode == "in_process":
        config["execution"] = {"config": {"workers": 1}}
    start = time.perf_counter()
    result = execute_job(job, instance=instance, tags={"dagster/partition": key}, run_config=config)
    wall = time.perf_counter() - start
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    events = instance.all_logs(result.run_id)
    starts, ends = {}, {}
    for e in events:
        kind = e.dagster_event.event_type if e.dagster_event else None
        if kind == DagsterEventType.STEP_START:
            starts[e.step_key] = e.timestamp
        elif kind in (DagsterEventType.STEP_SUCCESS, DagsterEventType.STEP_FAILURE):
            ends[e.step_key] = e.timestamp
    first = min(e.timestamp for e in events)
    return {
        "import_s": t_import,
        "wall_s": wall,
        "steps": {k: ends[k] - starts[k] for k in starts if k in ends},
        "n_events": len(events),
        "setup_s": min(starts.values()) - first,
        "span_s": max(ends.values()) - min(starts.values()),
    }


def cli_run(drop: Path, out: Path, env: dict) -> tuple[float, dict]:
    """`rtpipeline run` on the drop (a fresh process, its own daemon); the command's wall time and
    its course run's own time, from the instance's events."""
    from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

    from rt_assets.headless.instance import open_instance

    cli_env = {k: v for k, v in env.items() if k not in ("DAGSTER_HOME", "RT_DATA_ROOT", "RT_DROP_ROOT")}
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "rt_assets.cli", "run", "--dicom-root", str(drop), "--outdir", str(out)],
        cwd=ROOT,
        env=cli_env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stdout[-3000:] + proc.stderr[-3000:])
    instance = open_instance(out / ".dagster")
    (run,) = instance.get_runs(RunsFilter(job_name="course_job", statuses=[DagsterRunStatus.SUCCESS]))
    events = {e.dagster_event.event_type: e.timestamp for e in instance.all_logs(run.run_id) if e.dagster_event}
    steps = [e for e in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_START)]
    enqueued = events[DagsterEventType.RUN_ENQUEUED]
    return wall, {
        "course_run_s": events[DagsterEventType.RUN_SUCCESS] - enqueued,
        "queue_to_launch_s": events[DagsterEventType.RUN_STARTING] - enqueued,
        "launch_to_first_step_s": min(e.timestamp for e in steps) - events[DagsterEventType.RUN_STARTING],
        "import_s": 0.0,
    }


def write_course(drop: Path, rows: int, slices: int) -> None:
    from rt_resources.synthetic import SynthOptions, write_patient

    write_patient(drop, 0, SynthOptions(rows=rows, slices=slices, pixel_mm=500 / rows, slice_mm=3.0, boost=True))


def run_python(args: list[str], env: dict) -> tuple[float, dict]:
    """This script in a fresh process (``plain`` or ``dagster`` mode); its JSON report."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, *args], cwd=ROOT, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-4000:])
    return wall, json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--slices", type=int, default=120)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rt-overhead-"))
    env = {
        **os.environ,
        "RT_SITE_SECRET": SECRET,
        "PYTHONPATH": str(ROOT),
        "RT_RADIOMICS_PARAMS": str(PARAMS),
        "RT_TOTALSEG_DEVICE": "cpu",
    }
    env.pop("DAGSTER_HOME", None)
    try:
        drop = work / "drop"
        write_course(drop, args.rows, args.slices)
        n_files = sum(1 for _ in drop.rglob("*.dcm"))
        results: dict[str, list] = {
            "plain": [],
            "rtpipeline run": [],
            "dagster in-process": [],
            "multiprocess, forkserver": [],
            "multiprocess, spawn": [],
        }
        for i in range(args.repeat):
            for label in results:
                out = work / f"out-{i}-{label.replace(' ', '_')}"
                home = out / ".dagster"
                home.mkdir(parents=True)
                shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
                run_env = {**env, "DAGSTER_HOME": str(home), "RT_DATA_ROOT": str(out), "RT_DROP_ROOT": str(drop)}
                if label.startswith("multiprocess"):  # forced, whatever the number of step workers
                    run_env["RT_STEP_EXECUTOR"] = "multiprocess"
                if label == "multiprocess, spawn":  # Dagster's default start method, for comparison
                    run_env["RT_STEP_START_METHOD"] = "spawn"
                if label == "plain":
                    wall, info = run_python(["--plain", str(drop), str(out)], run_env)
                elif label == "rtpipeline run":
                    shutil.rmtree(home)
                    wall, info = cli_run(drop, out, run_env)
                else:
                    mode = "in_process" if "in-process" in label else "multiprocess"
                    wall, info = run_python(["--dagster", mode, str(drop), str(out)], run_env)
                results[label].append((wall, info))
                print(f"  run {i + 1} {label:22} {wall:6.2f} s", flush=True)
        print(
            f"\nCourse: CT {args.rows}x{args.rows}x{args.slices}, {n_files} DICOM files, primary + boost; "
            f"{os.cpu_count()} CPUs; medians of {args.repeat}\n"
        )
        base = statistics.median(w for w, _ in results["plain"])
        print(f"{'mode':28} {'process wall s':>14} {'vs plain':>9} {'imports s':>10}")
        for label, runs in results.items():
            wall = statistics.median(w for w, _ in runs)
            imports = statistics.median(i["import_s"] for _, i in runs)
            print(f"{label:28} {wall:14.2f} {wall / base:8.2f}x {imports:10.2f}")
            if label == "rtpipeline run":
                course = statistics.median(i["course_run_s"] for _, i in runs)
                queue = statistics.median(i["queue_to_launch_s"] for _, i in runs)
                start = statistics.median(i["launch_to_first_step_s"] for _, i in runs)
                print(
                    f"{'  its course run (queued->done)':28} {course:14.2f} {course / base:8.2f}x"
                    f"   (queue to launch {queue:.2f} s, launch to first step {start:.2f} s)"
                )
        plain_stages = {
            k: statistics.median(i["stages"][k] for _, i in results["plain"]) for k in results["plain"][0][1]["stages"]
        }
        print("\nwhere the time goes (medians, s):")
        for label in ("dagster in-process", "multiprocess, forkserver", "multiprocess, spawn"):
            runs = [i for _, i in results[label]]
            steps = {k: statistics.median(r["steps"].get(k, 0.0) for r in runs) for k in runs[0]["steps"]}
            setup = statistics.median(r["setup_s"] for r in runs)
            span = statistics.median(r["span_s"] for r in runs)
            run_wall = statistics.median(r["wall_s"] for r in runs)
            print(
                f"  {label}: execute_job {run_wall:.2f} = setup before first step {setup:.2f} + steps span "
                f"{span:.2f} + teardown {run_wall - setup - span:.2f}; sum of step times {sum(steps.values()):.2f}; "
                f"{statistics.median(r['n_events'] for r in runs):.0f} events"
            )
            for step, seconds in sorted(steps.items(), key=lambda kv: -kv[1]):
                engine = plain_stages.get(step)
                extra = f"   (plain loop {engine:.2f})" if engine is not None else ""
                print(f"      {step:18} {seconds:6.2f}{extra}")
        print(
            f"  plain: survey {plain_stages.pop('survey'):.2f} + "
            + " + ".join(f"{k} {v:.2f}" for k, v in plain_stages.items())
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--plain"]:
        print(json.dumps(plain_loop(Path(sys.argv[2]), Path(sys.argv[3]), PARAMS)))
    elif sys.argv[1:2] == ["--dagster"]:
        print(json.dumps(dagster_run(Path(sys.argv[3]), Path(sys.argv[4]), sys.argv[2])))
    else:
        main()
