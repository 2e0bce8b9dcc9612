"""rtpipeline: radiotherapy DICOM-RT exports to analysis-ready research data, headless.

  rtpipeline run    --dicom-root IN --outdir OUT   process every course (the Dagster run queue)
  rtpipeline synth  --out DIR --patients N         write synthetic DICOM-RT courses
  rtpipeline audit  --outdir OUT --course KEY      where a course's numbers came from
  rtpipeline export --outdir OUT --to DIR          a de-identified copy to share
  rtpipeline doctor                                versions, devices, settings, segmentation

"rtpipeline COMMAND --help" describes each command.
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


def cmd_synth(args: argparse.Namespace) -> int:
    from rt_resources.synthetic import write_cohort
    from rt_resources.synthetic.cli_args import options_from_args

    patients = write_cohort(Path(args.out), args.patients, options_from_args(args))
    n_files = sum(len(c.files) for p in patients for c in p.courses)
    n_courses = sum(len(p.courses) for p in patients)
    print(f"wrote {len(patients)} patients, {n_courses} courses, {n_files} files under {Path(args.out).resolve()}")
    return 0


def settings_overrides(args: argparse.Namespace, drop: Path, out: Path) -> dict:
    """The settings the command line sets (only what was given; the rest comes from the file and
    environment, see rt_resources.settings)."""
    o: dict = {"data_root": str(out), "drop_root": str(drop)}
    ts: dict = {"device": args.totalseg_device}
    if args.totalseg_fast:
        ts["fast"] = True
    if args.totalseg_roi_subset:
        ts["roi_subset"] = list(args.totalseg_roi_subset)
    if args.totalseg_license_env:
        ts["license_env"] = args.totalseg_license_env
    if args.totalseg_license_file:
        ts["license_file"] = args.totalseg_license_file
    o["totalsegmentator"] = ts
    rad: dict = {}
    if args.sequential_radiomics:
        rad["sequential"] = True
    if args.radiomics_params:
        rad["params"] = args.radiomics_params
    if rad:
        o["radiomics"] = rad
    seg: dict = {}
    if args.extra_seg_models:
        seg["models_dir"] = args.extra_seg_models
    if args.custom_structures:
        seg["custom_structures"] = args.custom_structures
    if args.crop_region:
        seg["crop_regions"] = list(args.crop_region)
    if seg:
        o["segmentation"] = seg
    if args.workers is not None:
        o["workers"] = args.workers
    if args.priority:
        o["priority"] = args.priority
    return o


def cmd_run(args: argparse.Namespace) -> int:
    from rt_assets.headless.run import EXIT_USAGE, RunOptions, execute
    from rt_resources.settings import SettingsError, load_settings

    drop = Path(args.dicom_root).resolve()
    out = Path(args.outdir).resolve()
    if not drop.is_dir():
        log.error("--dicom-root %s is not a folder", drop)
        return EXIT_USAGE
    if out == drop or out.is_relative_to(drop):
        log.error("--outdir %s lies inside --dicom-root %s: the drop folder is never written to", out, drop)
        return EXIT_USAGE
    if args.totalseg_license:
        log.error(
            "--totalseg-license takes no key on the command line (it would be in the shell history and the "
            "process list): put the key in an environment variable and name it with --totalseg-license-env "
            "(default RT_TOTALSEG_LICENSE), or in a file given with --totalseg-license-file"
        )
        return EXIT_USAGE
    if args.workers is not None and args.workers < 1:
        log.error("--workers must be at least 1")
        return EXIT_USAGE
    try:
        settings = load_settings(args.settings, overrides=settings_overrides(args, drop, out))
    except SettingsError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    if args.seg_workers and args.seg_workers != 1:
        log.warning(
            "--seg-workers %d: segmentations run one at a time (the instance's gpu pool and rt/gpu run limit); "
            "raise them with `dagster instance concurrency set gpu N` and in dagster.yaml on a machine with N GPUs",
            args.seg_workers,
        )
    try:
        return execute(
            RunOptions(
                drop=drop,
                out=out,
                settings=settings,
                force=args.force,
                courses=set(args.course or []),
                no_wait=args.no_wait,
                verbose=args.verbose,
            )
        )
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130


def cmd_doctor(args: argparse.Namespace) -> int:
    from rt_resources.provenance import tool_versions
    from rt_resources.segmentation.availability import segmentation_availability
    from rt_resources.settings import SettingsError, load_settings, settings_file

    versions = tool_versions(
        ("torch", "torchvision", "TotalSegmentator", "nnunetv2", "pyradiomics-bhklab", "dicompyler-core",
         "dagster-webserver")
    )  # fmt: skip
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
    try:
        settings = load_settings(args.settings)
    except SettingsError as exc:
        print(f"{'settings':<20} ERROR: {exc}")
        return 2
    print(f"{'CPU cores':<20} {os.cpu_count()} (CPU workers per run {settings.cpu_workers()})")
    print(f"{'settings file':<20} {args.settings or settings_file() or '(none: defaults and environment)'}")
    print(f"{'data root':<20} {settings.data_root}")
    print(f"{'drop folder':<20} {settings.drop_root or '(unset)'}")
    home = os.environ.get("DAGSTER_HOME", "")
    config = Path(home) / "dagster.yaml" if home else None
    print(
        f"{'DAGSTER_HOME':<20} {home or '(unset: rtpipeline run uses <outdir>/.dagster)'}"
        + (f" ({'dagster.yaml present' if config.exists() else 'no dagster.yaml'})" if config else "")
    )
    seg = segmentation_availability(settings)
    ts = "ready: " + seg.totalseg_detail if seg.totalseg_ready else "NOT AVAILABLE: " + seg.totalseg_detail
    print(f"{'TotalSegmentator':<20} {ts}")
    print(f"{'custom models':<20} {', '.join(m.name for m in seg.models) or 'none'}")
    if not seg.any:
        print(f"{'segmentation':<20} no segmentation run is launched from any path (CLI, sensor, automation)")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    """Print the lineage chain of a course, or of one number of it, from the Dagster event log."""
    from rt_assets.audit import AuditError, course_chain, format_chain, metric_chain, source_files
    from rt_assets.headless.instance import open_instance, resolve_home
    from rt_resources.settings import load_settings

    out = Path(args.outdir).resolve() if args.outdir else Path(load_settings().data_root)
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
    home = resolve_home(out)
    if not (home / "dagster.yaml").exists():
        log.error("no Dagster instance in %s (set DAGSTER_HOME to the instance the runs used)", home)
        return 2
    instance = open_instance(home)
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
        header = [f"course {args.course}: {len(chain)} materialized assets (newest first), Dagster home {home}"]
        found = {"course_key": args.course, "chain": chain, "source_files": files}
    if not chain:
        log.error("no materialization of course %s in the Dagster instance %s", args.course, home)
        return 1
    if args.json:
        import json

        print(json.dumps(found, indent=2, default=str))
    else:
        print(format_chain(chain, files, header))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """A de-identified DICOM copy of processed courses (PS3.15 Annex E Basic Profile) with their tables."""
    from rt_resources.export import ExportUsageError, export_courses
    from rt_resources.ingest.course_keys import load_site_secret
    from rt_resources.settings import load_settings

    out = Path(args.outdir).resolve()
    settings = load_settings(overrides={"data_root": str(out)})
    drop = Path(settings.drop_root) if settings.drop_root else None
    try:
        reports = export_courses(out, Path(args.to), load_site_secret(out), args.course or None, drop_root=drop)
    except ExportUsageError as exc:
        log.error("%s", exc)
        return 2
    for r in reports:
        written = ", ".join(f"{n} {k}" for k, n in sorted(r.written.items())) or "nothing"
        status = "ok" if r.ok else f"FAILED: {r.error}"
        print(f"{r.course_key:<16} {status:<8} {written}; refused {len(r.refused)}  -> {r.output or '-'}")
        for refused in r.refused:
            print(f"{'':<16} refused {refused['kind']}: {refused['reason']}")
        for warning in r.warnings:
            print(f"{'':<16} warning: {warning}")
    print(f"exported {sum(r.ok for r in reports)} of {len(reports)} courses to {Path(args.to).resolve()} "
          "(DICOM PS3.15 Annex E Basic Profile; each course's export.json says what was done)")  # fmt: skip
    return 0 if all(r.ok for r in reports) else 1


RUN_EPILOG = """Courses whose content, asset code and output-changing settings are unchanged since their last
successful run are listed as "unchanged" and not run again; new or changed courses run alone.

Runs are submitted to the Dagster instance's run queue ($DAGSTER_HOME, else OUTDIR/.dagster) and
launched by its daemon; when none is running, this command starts one for its duration.

Settings: defaults < --settings YAML (else $RT_SETTINGS, else $DAGSTER_HOME/rtpipeline.yaml) <
environment (RT_DATA_ROOT, RT_RADIOMICS_PARAMS, ...) < these options.

exit codes:
  0    every course ok or unchanged
  1    a course or the cohort tables failed, or the drop holds no course
  2    bad arguments or settings, DAGSTER_HOME not writable, --no-wait without a daemon
  3    another rtpipeline run is processing the same --outdir
  130  interrupted (its queued runs cancelled, running ones asked to stop)

examples:
  rtpipeline run --dicom-root ./data --outdir ./output
  rtpipeline run --dicom-root ./data --outdir ./output --totalseg-device cpu --totalseg-fast
  rtpipeline run --dicom-root ./data --outdir ./output --force --course c-0123456789ab
  RT_TOTALSEG_LICENSE=... rtpipeline run --dicom-root ./data --outdir ./output  (licensed tasks)
"""


def build_parser() -> argparse.ArgumentParser:
    from rt_resources.segmentation.regions import REGIONS

    parser = argparse.ArgumentParser(
        prog="rtpipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser("synth", help="write synthetic DICOM-RT courses (phantom CT, RTSTRUCT, RTPLAN, RTDOSE)",
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)  # fmt: skip
    from rt_resources.synthetic.cli_args import add_cli_arguments

    add_cli_arguments(synth)
    synth.set_defaults(func=cmd_synth)

    run = sub.add_parser(
        "run",
        help="process every course of a DICOM folder through the asset graph",
        description="Process every course of a DICOM folder: index it, submit the runs each course needs to "
        "the Dagster run queue, follow them and print a summary.",
        epilog=RUN_EPILOG,
        formatter_class=_RunHelpFormatter,
    )
    run.add_argument("--dicom-root", required=True, help="drop folder with DICOM-RT exports (read only)")
    run.add_argument("--outdir", required=True, help="data root for courses/ and cohort/")
    run.add_argument("--settings", metavar="YAML", help="settings file (see rt_resources/settings.py)")
    run.add_argument("--workers", type=int, default=None,
                     help="CPU workers of each run: steps at once and pool size (default: CPU cores - 1)")  # fmt: skip
    run.add_argument("--seg-workers", type=int, default=None,
                     help="accepted for compatibility: segmentations run one at a time (the gpu pool)")  # fmt: skip
    run.add_argument("--priority", choices=["size", "fifo"], default=None,
                     help="queue order: small courses first, or order of arrival (default: size)")  # fmt: skip
    run.add_argument("--force", action="store_true", help="run every course again (or only the --course ones)")
    run.add_argument("--course", action="append", metavar="KEY",
                     help="only this course (repeatable); with --force, run it even if unchanged")  # fmt: skip
    run.add_argument("--no-wait", action="store_true",
                     help="submit the course runs and return (needs a running daemon; it does the rest)")  # fmt: skip
    run.add_argument("--totalseg-device", choices=["gpu", "cpu"], default="gpu", help="TotalSegmentator device")
    run.add_argument("--totalseg-fast", action="store_true", help="TotalSegmentator's fast (3 mm) models")
    run.add_argument("--totalseg-roi-subset", nargs="+", metavar="CLASS", help="only these TotalSegmentator classes")
    run.add_argument("--totalseg-license-env", metavar="VAR",
                     help="variable holding the licence key (default: RT_TOTALSEG_LICENSE)")  # fmt: skip
    run.add_argument("--totalseg-license-file", metavar="FILE", help="file holding the TotalSegmentator licence key")
    run.add_argument("--totalseg-license", default="", help=argparse.SUPPRESS)  # refused: no secret on a command line
    run.add_argument("--extra-seg-models", metavar="DIR", help="folder of custom nnU-Net models (model.yaml each)")
    run.add_argument("--custom-structures", metavar="YAML", help="boolean structure combinations with margins")
    run.add_argument("--crop-region", action="append", choices=sorted(REGIONS),
                     help="crop to this region; repeatable (default: every region with its landmarks)")  # fmt: skip
    run.add_argument("--sequential-radiomics", action="store_true", help="radiomics one ROI at a time, in process")
    run.add_argument("--radiomics-params", metavar="YAML", help="pyradiomics parameter file (default: shipped CT.yaml)")
    run.add_argument("-v", "--verbose", action="store_true", help="Dagster's and the engines' debug logs")
    run.set_defaults(func=cmd_run)

    audit = sub.add_parser("audit", help="where a course's numbers came from: files, models, code (event log)")
    audit.add_argument("--outdir", help="data root of the run (default: the settings' data root); its .dagster "
                       "instance unless $DAGSTER_HOME is set")  # fmt: skip
    audit.add_argument("--course", required=True, help="course key (c-...)")
    audit.add_argument("--roi", help="ROI name as in the tables (with --metric)")
    audit.add_argument("--metric", help="a DVH column (d95_gy, mean_gy, ...) or a pyradiomics feature name")
    audit.add_argument("--source", help="mask source of the ROI (manual, totalseg, ...); default: all")
    audit.add_argument("--json", action="store_true", help="machine-readable output")
    audit.set_defaults(func=cmd_audit)

    export = sub.add_parser(
        "export",
        help="a de-identified DICOM copy of processed courses with their research tables",
        description="Write a de-identified copy (DICOM PS3.15 Annex E, Basic Application Level Confidentiality "
        "Profile) of each processed course: CT, MR, RTSTRUCT, RTPLAN, RTDOSE and REG with consistent new UIDs, "
        "PatientID and name = the course key, free-text labels cleared, private tags removed, burned-in images "
        "refused; and its research tables, keyed by course key. The export can be processed again as a drop.",
        formatter_class=_RunHelpFormatter,
    )
    export.add_argument("--outdir", required=True, help="data root of the processed courses")
    export.add_argument("--to", required=True, metavar="DIR", help="where to write the export")
    export.add_argument("--course", action="append", metavar="KEY", help="only this course (repeatable)")
    export.set_defaults(func=cmd_export)

    doctor = sub.add_parser("doctor", help="print versions, devices, settings and what can segment here")
    doctor.add_argument("--settings", metavar="YAML", help="settings file")
    doctor.set_defaults(func=cmd_doctor)
    return parser


class _RunHelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Defaults shown where an option has one (not for flags, nor where the help names it), the
    epilog kept as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default in (None, False, "", argparse.SUPPRESS) or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rtpipeline")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(getattr(args, "verbose", False))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
