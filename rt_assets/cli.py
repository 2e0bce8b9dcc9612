"""``rtpipeline``: the headless way in, on top of the same asset graph.

rtpipeline synth  --out DIR --patients N [...]      write synthetic DICOM-RT courses
rtpipeline run    --dicom-root IN --outdir OUT [--workers N] [-v]
rtpipeline audit  --outdir OUT --course KEY [--roi NAME --metric d95_gy]
                                                    where a course's numbers came from
rtpipeline doctor                                   versions, devices, locations
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

log = logging.getLogger("rtpipeline")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(message)s",
        datefmt="%H:%M:%S",
    )
    if not verbose:
        for noisy in ("dagster", "alembic"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def _parallelization_block(args: argparse.Namespace, workers: int) -> str:
    from rt_resources.segmentation.totalseg import default_seg_workers, default_threads

    cores = os.cpu_count() or 1
    radiomics = "sequential, in process" if args.sequential_radiomics else f"{max(1, cores - 1)} workers (cores - 1)"
    lines = [
        "=== Parallelization Configuration ===",
        f"CPU cores:                          {cores}",
        f"Course runs at once (--workers):    {workers}" + ("  (default: cores - 1)" if args.workers is None else ""),
        "Steps within a CLI run:             in process (one process per course run)",
        f"UI / sensor runs:                   {_step_executor_line()}",
        f"Segmentation (--seg-workers):       {args.seg_workers or default_seg_workers(args.totalseg_device)} at a "
        f"time, device {args.totalseg_device}, {default_threads()} resampling threads"
        " (runs tagged rt/gpu: one GPU run at a time)",
        "DVH:                                contour-based (manual ROIs) and mask-based (other mask sources)",
        "Radiomics:                          " + radiomics + ", thread_limit=1 per worker",
        "=====================================",
    ]
    return "\n".join(lines)


def _step_executor_line() -> str:
    from rt_assets.executors import default_workers, step_executor

    workers = default_workers()
    if step_executor().name == "in_process":
        return f"steps in process ({workers} step worker: a process per step would only add start-up)"
    return f"multiprocess, {workers} step workers (cores - 1, $RT_WORKERS), forked from a preloaded forkserver"


def cmd_synth(args: argparse.Namespace) -> int:
    from rt_resources.synthetic import write_cohort
    from rt_resources.synthetic.cli_args import options_from_args

    patients = write_cohort(Path(args.out), args.patients, options_from_args(args))
    n_files = sum(len(c.files) for p in patients for c in p.courses)
    n_courses = sum(len(p.courses) for p in patients)
    print(f"wrote {len(patients)} patients, {n_courses} courses, {n_files} files under {Path(args.out).resolve()}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rt_assets.executors import default_workers

    drop = Path(args.dicom_root).resolve()
    out = Path(args.outdir).resolve()
    if not drop.is_dir():
        log.error("--dicom-root %s is not a folder", drop)
        return 2
    if out == drop or out.is_relative_to(drop):
        log.error("--outdir %s lies inside --dicom-root %s: the drop folder is never written to", out, drop)
        return 2
    workers = args.workers if args.workers is not None else default_workers()
    os.environ["RT_DROP_ROOT"] = str(drop)
    os.environ["RT_DATA_ROOT"] = str(out)
    os.environ.setdefault("RT_WORKERS", str(workers))
    os.environ["RT_CLI_LOG_LEVEL"] = "DEBUG" if args.verbose else "WARNING"
    _segmentation_env(args)

    from rt_assets.headless import ensure_dagster_home, execute_cohort, run_courses
    from rt_resources.ingest.survey import survey_drop

    home = ensure_dagster_home(out / ".dagster")
    log.info("\n%s", _parallelization_block(args, workers))
    log.info("drop folder %s -> data root %s (Dagster instance %s)", drop, out, home)

    survey = survey_drop(drop, out)
    scan = survey.scan
    log.info(
        "indexed %d files in %.2f s (%d parsed, %d unchanged); %d courses; %d files not used",
        len(scan.entries), scan.seconds, scan.n_parsed, len(scan.entries) - scan.n_parsed,
        len(survey.courses), len(survey.links.rejections),
    )  # fmt: skip
    for r in survey.links.rejections:
        log.warning("not used: %s: %s", r.path, r.reason)

    outcomes = run_courses([(c.key, c.fingerprint) for c in survey.courses], workers)
    seg_outcomes = _segment(args, [(c.key, c.fingerprint) for c in survey.courses], outcomes, workers)
    outcomes += seg_outcomes
    cohort = execute_cohort()

    print("\n=== Courses ===")
    print(
        f"{'course':<16} {'status':<8} {'CT':>4} {'RTSTRUCT':>8} {'RTPLAN':>6} {'RTDOSE':>6} {'DVH ROIs':>8} "
        f"{'QC':<12} outputs"
    )
    for c in survey.courses:
        failed = [o for o in outcomes if o.subject == c.key and not o.success]
        o = failed[0] if failed else None
        status = "ok" if o is None else "FAILED"
        n_ct = sum(1 for f in c.files_of("CT") if f.header.series_uid == c.ct_series_uid)
        print(
            f"{c.key:<16} {status:<8} {n_ct:>4} {len(c.struct_uids):>8} {len(c.plan_uids):>6} "
            f"{len(c.dose_uids):>6} {_dvh_rois(out / 'courses' / c.key):>8} {_qc_summary(out / 'courses' / c.key):<12} "
            f"{out / 'courses' / c.key}"
        )
        if o is not None:
            print(f"{'':<16} {o.job}: {o.error}")
    print(f"cohort tables: {out / 'cohort'} ({'ok' if cohort.success else 'FAILED: ' + cohort.error})")
    print(f"files not used: {len(survey.links.rejections)} (see {out / 'cohort' / 'ingest_report.parquet'})")
    print(f"DVH metrics of all courses: {out / 'cohort' / 'dvh_metrics.parquet'}")
    print(f"radiomics of all courses:   {out / 'cohort' / 'radiomics.parquet'}")
    print(f"quality checks:             {out / 'cohort' / 'qc.parquet'} (per course: courses/<key>/qc.json)")
    print(f"where a number came from:   rtpipeline audit --outdir {out} --course <key> [--roi NAME --metric d95_gy]")
    print(f"runs and lineage in the UI: RT_DROP_ROOT={drop} RT_DATA_ROOT={out} DAGSTER_HOME={home} \\")
    print("    dagster dev -w workspace.yaml   (for the demo: make ui)")
    failed = [o for o in outcomes if not o.success] + ([] if cohort.success else [cohort])
    if not survey.courses:
        log.error("no course found in %s", drop)
        return 1
    return 1 if failed else 0


def _segmentation_env(args: argparse.Namespace) -> None:
    """Hand the segmentation flags to the asset graph's resources (read from the environment)."""
    os.environ["RT_TOTALSEG_DEVICE"] = args.totalseg_device
    if args.totalseg_fast:
        os.environ["RT_TOTALSEG_FAST"] = "1"
    if args.totalseg_roi_subset:
        os.environ["RT_TOTALSEG_ROI_SUBSET"] = ",".join(args.totalseg_roi_subset)
    if args.totalseg_license:
        os.environ["RT_TOTALSEG_LICENSE"] = args.totalseg_license
    if args.extra_seg_models:
        os.environ["RT_MODELS_DIR"] = str(Path(args.extra_seg_models).resolve())
    if args.custom_structures:
        os.environ["RT_CUSTOM_STRUCTURES"] = str(Path(args.custom_structures).resolve())
    if args.crop_region:
        os.environ["RT_CROP_REGIONS"] = ",".join(args.crop_region)
    if args.sequential_radiomics:
        os.environ["RT_SEQUENTIAL_RADIOMICS"] = "1"
    if args.radiomics_params:
        os.environ["RT_RADIOMICS_PARAMS"] = str(Path(args.radiomics_params).resolve())


def _segment(args, courses: list[tuple[str, str]], course_outcomes, workers: int) -> list:
    """Segmentation runs (tagged rt/gpu, ``--seg-workers`` at a time), then the derived runs."""
    from rt_assets.constants import DERIVED_JOB, SEGMENTATION_JOB
    from rt_assets.headless import run_courses
    from rt_resources.resources import resources_from_env
    from rt_resources.segmentation.nnunet_models import discover_models
    from rt_resources.segmentation.totalseg import WeightsMissing, check_ready, default_seg_workers

    ok = [(k, fp) for k, fp in courses if all(o.success for o in course_outcomes if o.subject == k)]
    settings = resources_from_env()["totalsegmentator"].settings()
    seg_workers = args.seg_workers or default_seg_workers(settings.device)
    models = discover_models(Path(os.environ["RT_MODELS_DIR"])) if os.environ.get("RT_MODELS_DIR") else []
    try:
        check_ready(settings)
        have_weights = True
    except WeightsMissing as exc:
        have_weights = False
        log.warning("segmentation skipped: %s", exc)
    outcomes = []
    if (have_weights or models) and ok:
        log.info(
            "segmentation: device %s, %d at a time (--seg-workers), %d threads; custom models: %s",
            settings.device, seg_workers, settings.threads, ", ".join(m.name for m in models) or "none",
        )  # fmt: skip
        outcomes = run_courses(ok, seg_workers, SEGMENTATION_JOB)
    if outcomes or args.custom_structures:
        segmented = {o.subject for o in outcomes if o.success} if outcomes else {k for k, _ in ok}
        outcomes += run_courses([(k, fp) for k, fp in ok if k in segmented], workers, DERIVED_JOB)
    return outcomes


def _dvh_rois(course_dir: Path) -> str:
    """How many ROIs have a DVH, or why none ("no dose")."""
    path = course_dir / "dvh_metrics.parquet"
    if path.exists():
        import pyarrow.parquet as pq

        return str(pq.read_metadata(path).num_rows)
    return "no dose" if not (course_dir / "dose.nii.gz").exists() else "-"


def _qc_summary(course_dir: Path) -> str:
    """PASS, or the failed checks by severity (e.g. "FAIL 1E 2W"), from the course's qc.json."""
    path = course_dir / "qc.json"
    if not path.exists():
        return "-"
    import json

    doc = json.loads(path.read_text())
    failed = doc["counts"]["failed_by_severity"]
    if doc["status"] == "PASS":
        return "PASS"
    return f"{doc['status']} {failed.get('ERROR', 0)}E {failed.get('WARN', 0)}W"


def cmd_doctor(args: argparse.Namespace) -> int:
    from rt_assets.executors import default_workers
    from rt_resources.provenance import tool_versions

    versions = tool_versions(
        (
            "torch",
            "torchvision",
            "TotalSegmentator",
            "nnunetv2",
            "pyradiomics-bhklab",
            "dicompyler-core",
            "dagster-webserver",
        )
    )
    print("=== rtpipeline doctor ===")
    for name, version in versions.items():
        print(f"{name:<20} {version}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        device = torch.cuda.get_device_name(0) if cuda else "none"
        print(f"{'torch device':<20} {'cuda: ' + device if cuda else 'cpu only'}")
    except Exception as exc:  # pragma: no cover - torch missing or broken
        print(f"{'torch device':<20} unavailable ({exc})")
    print(f"{'CPU cores':<20} {os.cpu_count()} (default workers {default_workers()})")
    print(f"{'RT_DATA_ROOT':<20} {os.environ.get('RT_DATA_ROOT', '(unset: rt_data)')}")
    print(f"{'RT_DROP_ROOT':<20} {os.environ.get('RT_DROP_ROOT', '(unset)')}")
    home = os.environ.get("DAGSTER_HOME", "")
    config = Path(home) / "dagster.yaml" if home else None
    print(
        f"{'DAGSTER_HOME':<20} {home or '(unset: rtpipeline run uses <outdir>/.dagster)'}"
        + (f" ({'dagster.yaml present' if config.exists() else 'no dagster.yaml'})" if config else "")
    )
    ts_home = Path(os.environ.get("TOTALSEG_HOME_DIR", Path.home() / ".totalsegmentator"))
    weights = ts_home / "nnunet" / "results"
    found = "found" if weights.is_dir() and any(weights.iterdir()) else "not found"
    print(f"{'TotalSegmentator':<20} weights {found} in {weights}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the lineage chain of a course, or of one number of it, from the Dagster event log."""
    from dagster import DagsterInstance

    from rt_assets.audit import AuditError, course_chain, format_chain, metric_chain, source_files
    from rt_assets.headless import ensure_dagster_home

    out = Path(args.outdir or os.environ.get("RT_DATA_ROOT", "rt_data")).resolve()
    course_dir = out / "courses" / args.course
    if not (course_dir / "manifest.json").exists():
        known = sorted(p.name for p in (out / "courses").glob("c-*")) if (out / "courses").is_dir() else []
        log.error(
            "course %s has no manifest under %s (courses there: %s)", args.course, out, ", ".join(known) or "none"
        )
        return 2
    if bool(args.roi) != bool(args.metric):
        log.error("--roi and --metric go together")
        return 2
    ensure_dagster_home(out / ".dagster")
    instance = DagsterInstance.get()
    if args.metric:
        try:
            found = metric_chain(instance, course_dir, args.roi, args.metric, args.source)
        except AuditError as exc:
            log.error("%s", exc)
            return 2
        chain, files = found["chain"], found["source_files"]
        values = ", ".join(f"{v['value']} ({v['source']})" for v in found["values"])
        match = {True: "matches", False: "DOES NOT match", None: "no recorded digest for"}[
            found["table_matches_record"]
        ]
        header = [
            f"{args.metric} of {args.roi} in course {args.course}: {values}",
            f"   from {found['table']} (sha256 {found['table_sha256']}, {match} the latest materialization)",
        ]
    else:
        chain, files = course_chain(instance, args.course), source_files(course_dir)
        header = [f"course {args.course}: {len(chain)} materialized assets (newest first), Dagster home "
                  f"{os.environ['DAGSTER_HOME']}"]  # fmt: skip
        found = {"course_key": args.course, "chain": chain, "source_files": files}
    if not chain:
        log.error("no materialization of course %s in the Dagster instance %s", args.course, os.environ["DAGSTER_HOME"])
        return 1
    if args.json:
        import json

        print(json.dumps(found, indent=2, default=str))
    else:
        print(format_chain(chain, files, header))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rtpipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write synthetic DICOM-RT courses (phantom CT, RTSTRUCT, RTPLAN, RTDOSE)")
    from rt_resources.synthetic.cli_args import add_cli_arguments

    add_cli_arguments(synth)
    synth.set_defaults(func=cmd_synth)

    run = sub.add_parser("run", help="process every course of a DICOM folder through the asset graph")
    run.add_argument("--dicom-root", required=True, help="drop folder with DICOM-RT exports (read only)")
    run.add_argument("--outdir", required=True, help="data root for courses/ and cohort/")
    run.add_argument("--workers", type=int, default=None, help="course runs at once (default: CPU cores - 1)")
    run.add_argument("--seg-workers", type=int, default=None,
                     help="segmentations at once (default: 1 on the GPU; cores // 4, 1 to 2, on the CPU)")  # fmt: skip
    run.add_argument("--totalseg-device", choices=["gpu", "cpu"], default="gpu", help="TotalSegmentator device")
    run.add_argument("--totalseg-fast", action="store_true", help="TotalSegmentator's fast (3 mm) models")
    run.add_argument("--totalseg-roi-subset", nargs="+", metavar="CLASS", help="only these TotalSegmentator classes")
    run.add_argument("--totalseg-license", default="", help="TotalSegmentator license key (licensed tasks)")
    run.add_argument("--extra-seg-models", metavar="DIR", help="folder of custom nnU-Net models (model.yaml each)")
    run.add_argument("--custom-structures", metavar="YAML", help="boolean structure combinations with margins")
    run.add_argument("--crop-region", action="append", help="crop to this region (pelvis, thorax, ...); repeatable")
    run.add_argument("--sequential-radiomics", action="store_true", help="radiomics one ROI at a time, in process")
    run.add_argument("--radiomics-params", metavar="YAML", help="pyradiomics parameter file (default: shipped CT.yaml)")
    run.add_argument("-v", "--verbose", action="store_true")
    run.set_defaults(func=cmd_run)

    audit = sub.add_parser("audit", help="where a course's numbers came from: files, models, code (event log)")
    audit.add_argument("--outdir", help="data root of the run (default: $RT_DATA_ROOT); its .dagster instance "
                       "unless $DAGSTER_HOME is set")  # fmt: skip
    audit.add_argument("--course", required=True, help="course key (c-...)")
    audit.add_argument("--roi", help="ROI name as in the tables (with --metric)")
    audit.add_argument("--metric", help="a DVH column (d95_gy, mean_gy, ...) or a pyradiomics feature name")
    audit.add_argument("--source", help="mask source of the ROI (manual, totalseg, ...); default: all")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(func=cmd_audit)

    doctor = sub.add_parser("doctor", help="print versions, devices, data root and instance location")
    doctor.set_defaults(func=cmd_doctor)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
