"""What each rtpipeline command does (the parser and its help are in :mod:`rt_assets.cli`).

Each ``cmd_*`` takes the parsed arguments and returns the exit code; heavy imports happen inside,
so ``rtpipeline --help`` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger("rtpipeline")


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
    if getattr(args, "totalseg_backend", None):
        ts["backend"] = args.totalseg_backend
    if getattr(args, "totalseg_standin_s", None) is not None:
        ts["standin_seconds"] = args.totalseg_standin_s
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
    if args.radiomics_backend:
        rad["backend"] = args.radiomics_backend
    if args.radiomics_robustness is not None:
        rad["robustness"] = args.radiomics_robustness
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


def check_site_tables(settings) -> None:
    """Load the site's structure-name and alpha/beta files now, so that a typo stops the command
    with the file and line (NamingError, EQD2Error: ValueErrors) instead of failing every course."""
    from rt_resources.resources import science_config

    science = science_config(settings)
    science.name_map()
    science.alpha_beta_table()


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
        check_site_tables(settings)
    except (SettingsError, ValueError) as exc:
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
    print(
        f"exported {sum(r.ok for r in reports)} of {len(reports)} courses to {Path(args.to).resolve()} "
        "(DICOM PS3.15 Annex E Basic Profile; each course's export.json says what was done)"
    )
    return 0 if all(r.ok for r in reports) else 1


def cmd_report(args: argparse.Namespace) -> int:
    """One self-contained HTML page about the cohort of a data root; prints the path written."""
    from rt_resources.report import ReportError, write_report

    out = Path(args.outdir).resolve()
    to = Path(args.to).resolve() if args.to else None
    try:
        summary = write_report(out, to)
    except ReportError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:
        log.error("cannot write the report: %s", exc)
        return 2
    for section, why in summary.why_empty.items():
        log.info("report section %s is empty: %s", section, why)
    print(summary.path)
    return 0


def receive_overrides(args: argparse.Namespace) -> dict:
    """The settings `rtpipeline receive`'s options set (only what was given)."""
    o: dict = {}
    if args.drop:
        o["drop_root"] = args.drop
    rx: dict = {}
    for name in ("ae_title", "bind", "port", "allow", "stale_after_h", "max_associations"):
        value = getattr(args, name)
        if value is not None:
            rx[name] = value
    if args.tls:
        rx["tls_cert"], rx["tls_key"], rx["tls_ca"] = args.tls
    if rx:
        o["receive"] = rx
    return o


def cmd_receive(args: argparse.Namespace) -> int:
    """Run the DICOM receiver until SIGTERM or Ctrl-C."""
    import signal
    import threading

    from rt_resources.receive import AllowRule, DicomReceiver, ListenError, ReceiveError, ReceiverConfig, TlsFiles
    from rt_resources.settings import SettingsError, load_settings

    if not args.verbose:
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    try:
        settings = load_settings(args.settings, overrides=receive_overrides(args))
    except SettingsError as exc:
        log.error("%s", exc)
        return 2
    rx = settings.receive
    if not settings.drop_root:
        log.error("no drop folder: give --drop DIR (or set RT_DROP_ROOT)")
        return 2
    tls_files = (rx.tls_cert, rx.tls_key, rx.tls_ca)
    if any(tls_files) and not all(tls_files):
        log.error("TLS needs a certificate, its key and a CA file together (--tls CERT KEY CA)")
        return 2
    try:
        config = ReceiverConfig(
            drop=Path(settings.drop_root),
            ae_title=rx.ae_title,
            bind=rx.bind,
            port=rx.port,
            allow=[AllowRule.parse(text) for text in rx.allow],
            tls=TlsFiles(*(Path(p) for p in tls_files)) if all(tls_files) else None,
            stale_after_s=rx.stale_after_h * 3600,
            sweep_interval_s=min(300.0, rx.stale_after_h * 3600 / 4),
            max_associations=rx.max_associations,
        )
        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):  # set explicitly: a background start may ignore them
            signal.signal(sig, lambda signum, frame: stop.set())
        DicomReceiver(config).serve(stop)
    except ListenError as exc:
        log.error("%s", exc)
        return 1
    except ReceiveError as exc:
        log.error("%s", exc)
        return 2
    return 0
