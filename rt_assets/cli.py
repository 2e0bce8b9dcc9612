"""rtpipeline: radiotherapy DICOM-RT exports to analysis-ready research data, headless.

  rtpipeline run     --dicom-root IN --outdir OUT   process every course (the Dagster run queue)
  rtpipeline synth   --out DIR --patients N         write synthetic DICOM-RT courses
  rtpipeline audit   --outdir OUT --course KEY      where a course's numbers came from
  rtpipeline export  --outdir OUT --to DIR          a de-identified copy to share
  rtpipeline report  --outdir OUT                   one HTML page about the cohort (QC, DVH, agreement, ...)
  rtpipeline receive --drop DIR                     receive DICOM over the network (C-STORE) into the drop
  rtpipeline doctor                                 versions, devices, settings, segmentation

"rtpipeline COMMAND --help" describes each command.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rt_assets.commands import cmd_audit, cmd_doctor, cmd_export, cmd_receive, cmd_report, cmd_run, cmd_synth

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


RECEIVE_EPILOG = """Each association is written to DIR/.rtpipeline-receive/staging/ (files named by SOP Instance
UID, fsync'd) and, when the sender releases it, moved into DIR/<calling AE>/<association id>/ with a
_COMPLETE marker; the drop sensor then starts the course. An aborted association is never moved:
its files stay in staging and are reported (log and DIR/.rtpipeline-receive/receive_log.jsonl)
once older than --stale-after. Nothing is deleted.

Settings: defaults < --settings YAML (section "receive") < environment (RT_DROP_ROOT,
RT_RECEIVE_PORT, RT_RECEIVE_AE_TITLE, RT_RECEIVE_ALLOW=AE@HOST,..., RT_RECEIVE_TLS_CERT/_KEY/_CA,
RT_RECEIVE_STALE_AFTER_H) < these options.

exit codes:
  0    stopped by SIGTERM or Ctrl-C (open associations are aborted; their files stay in staging)
  1    cannot listen on the port
  2    bad arguments or settings, drop folder missing, TLS files unusable, an --allow host unknown

examples:
  rtpipeline receive --drop /data/drop --port 11112 --ae-title RTPIPELINE
  rtpipeline receive --drop /data/drop --allow TPS@10.1.2.3 --allow PACS@pacs.example.org
  rtpipeline receive --drop /data/drop --tls server.pem server.key senders-ca.pem
  (a sender, DCMTK: storescu -aec RTPIPELINE +sd +r HOST 11112 COURSE_DIR)
"""


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


REPORT_EPILOG = """exit codes:
  0    the page was written (a section without data says why on the page)
  2    OUTDIR/cohort holds no cohort tables (run `rtpipeline run` first), or the page cannot be written

examples:
  rtpipeline report --outdir ./output                       (writes ./output/cohort/report.html)
  rtpipeline report --outdir ./output --to /tmp/cohort.html
"""


def build_parser() -> argparse.ArgumentParser:
    from rt_resources.segmentation.regions import REGIONS
    from rt_resources.settings import ReceiveSettings

    parser = argparse.ArgumentParser(
        prog="rtpipeline", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    synth = sub.add_parser(
        "synth",
        help="write synthetic DICOM-RT courses (phantom CT, RTSTRUCT, RTPLAN, RTDOSE)",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
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
    run.add_argument(
        "--workers",
        type=int,
        default=None,
        help="CPU workers of each run: steps at once and pool size (default: CPU cores - 1)",
    )
    run.add_argument(
        "--seg-workers",
        type=int,
        default=None,
        help="accepted for compatibility: segmentations run one at a time (the gpu pool)",
    )
    run.add_argument(
        "--priority",
        choices=["size", "fifo"],
        default=None,
        help="queue order: small courses first, or order of arrival (default: size)",
    )
    run.add_argument("--force", action="store_true", help="run every course again (or only the --course ones)")
    run.add_argument(
        "--course",
        action="append",
        metavar="KEY",
        help="only this course (repeatable); with --force, run it even if unchanged",
    )
    run.add_argument(
        "--no-wait",
        action="store_true",
        help="submit the course runs and return (needs a running daemon; it does the rest)",
    )
    run.add_argument("--totalseg-device", choices=["gpu", "cpu"], default="gpu", help="TotalSegmentator device")
    run.add_argument("--totalseg-fast", action="store_true", help="TotalSegmentator's fast (3 mm) models")
    run.add_argument(
        "--totalseg-backend",
        choices=["totalsegmentator", "standin"],
        help="standin: organ-shaped masks with TotalSegmentator's class names, no weights (demos, benchmarks)",
    )
    run.add_argument("--totalseg-standin-s", type=float, metavar="S", help="the stand-in's inference time (s)")
    run.add_argument("--totalseg-roi-subset", nargs="+", metavar="CLASS", help="only these TotalSegmentator classes")
    run.add_argument(
        "--totalseg-license-env", metavar="VAR", help="variable holding the licence key (default: RT_TOTALSEG_LICENSE)"
    )
    run.add_argument("--totalseg-license-file", metavar="FILE", help="file holding the TotalSegmentator licence key")
    run.add_argument("--totalseg-license", default="", help=argparse.SUPPRESS)  # refused: no secret on a command line
    run.add_argument("--extra-seg-models", metavar="DIR", help="folder of custom nnU-Net models (model.yaml each)")
    run.add_argument("--custom-structures", metavar="YAML", help="boolean structure combinations with margins")
    run.add_argument(
        "--crop-region",
        action="append",
        choices=sorted(REGIONS),
        help="crop to this region; repeatable (default: every region with its landmarks)",
    )
    run.add_argument("--sequential-radiomics", action="store_true", help="radiomics one ROI at a time, in process")
    run.add_argument("--radiomics-params", metavar="YAML", help="pyradiomics parameter file (default: shipped CT.yaml)")
    run.add_argument(
        "--radiomics-backend",
        choices=["pyradiomics", "fastrad", "auto"],
        help="who computes the feature classes: auto = fastrad (torch) on a CUDA device, else pyradiomics "
        "(default: pyradiomics; the images and feature names are pyradiomics' either way)",
    )
    run.add_argument(
        "--radiomics-robustness",
        type=int,
        metavar="N",
        help="N perturbations per ROI and an ICC per feature (radiomics_robustness; default: off)",
    )
    run.add_argument("-v", "--verbose", action="store_true", help="Dagster's and the engines' debug logs")
    run.set_defaults(func=cmd_run)

    audit = sub.add_parser("audit", help="where a course's numbers came from: files, models, code (event log)")
    audit.add_argument(
        "--outdir",
        help="data root of the run (default: the settings' data root); its .dagster "
        "instance unless $DAGSTER_HOME is set",
    )
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

    report = sub.add_parser(
        "report",
        help="one self-contained HTML page about a processed cohort (QC, DVH bands, agreement, robustness, ...)",
        description="Write one HTML page about the cohort of a data root: courses and their quality checks, DVH "
        "bands per structure, unmapped structure names, auto vs manual contour agreement, radiomics robustness, "
        "and the files of the drop not used and why. The page needs no server, network or JavaScript (figures are "
        "inline SVG); courses appear by course key and files by file id, never by patient name or path. "
        "Prints the path written.",
        epilog=REPORT_EPILOG,
        formatter_class=_RunHelpFormatter,
    )
    report.add_argument("--outdir", required=True, help="data root of the processed courses (its tables are only read)")
    report.add_argument(
        "--to", metavar="FILE.html", help="where to write the page (default: OUTDIR/cohort/report.html)"
    )
    report.set_defaults(func=cmd_report)

    receive = sub.add_parser(
        "receive",
        help="receive DICOM over the network (C-STORE) into the drop folder",
        description="A DICOM Storage SCP (C-STORE, C-ECHO) for planning systems and PACS: CT, MR, PET, RT "
        "Structure Set, RT Plan, RT Ion Plan, RT Dose and registrations (RT records and other RT objects are "
        "kept, and listed as unused); each released association lands in the drop with a _COMPLETE marker. "
        "Runs until stopped, beside the Dagster daemon.",
        epilog=RECEIVE_EPILOG,
        formatter_class=_RunHelpFormatter,
    )
    rx = ReceiveSettings.model_fields  # the defaults shown are the settings' own
    receive.add_argument("--drop", metavar="DIR", help="drop folder to fill (default: the settings' drop_root)")
    receive.add_argument("--port", type=int, help=f"TCP port to listen on (default: {rx['port'].default})")
    receive.add_argument("--ae-title", help=f"this receiver's AE title (default: {rx['ae_title'].default})")
    receive.add_argument("--bind", metavar="ADDRESS", help=f"address to listen on (default: {rx['bind'].default})")
    receive.add_argument(
        "--allow",
        action="append",
        metavar="AE@HOST",
        help="only this calling AE, from this host, IP or network (AE alone: any host); "
        "repeatable (default: every calling AE)",
    )
    receive.add_argument(
        "--tls",
        nargs=3,
        metavar=("CERT", "KEY", "CA"),
        help="TLS with this certificate and key; senders need a certificate from CA",
    )
    receive.add_argument(
        "--stale-after",
        dest="stale_after_h",
        type=float,
        metavar="HOURS",
        help="report an aborted association's files left in staging after this long "
        f"(default: {rx['stale_after_h'].default:g})",
    )
    receive.add_argument(
        "--max-associations",
        type=int,
        metavar="N",
        help=f"associations at once (default: {rx['max_associations'].default})",
    )
    receive.add_argument("--settings", metavar="YAML", help="settings file (see rt_resources/settings.py)")
    receive.add_argument("-v", "--verbose", action="store_true", help="pynetdicom's logs and one line per instance")
    receive.set_defaults(func=cmd_receive)

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
