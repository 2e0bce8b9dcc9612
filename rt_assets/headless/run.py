"""``rtpipeline run`` from start to summary (the package docstring says what it does and why).

Exit codes: 0 every course is ok or unchanged; 1 a course or the cohort tables failed, or the drop
holds no course; 2 bad arguments or settings, an unusable DAGSTER_HOME, or ``--no-wait`` without a
daemon; 3 another ``rtpipeline run`` is processing the same data root; 130 interrupted (Ctrl-C:
its queued runs are cancelled, its running ones asked to stop).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from rt_assets.config import use_settings
from rt_assets.constants import (
    COHORT_JOB,
    COURSE_JOB,
    DERIVED_JOB,
    SEGMENTATION_JOB,
    TAG_CLI_SESSION,
    TAG_DATA_ROOT,
    TAG_LAUNCHED_BY,
    TAG_STAGE,
)
from rt_resources.provenance import digest_of
from rt_resources.settings import INSTANCE_SETTINGS_FILE, Settings, write_settings

log = logging.getLogger("rtpipeline")

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_BUSY, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


@dataclass
class RunOptions:
    drop: Path
    out: Path
    settings: Settings
    force: bool = False  #: run the courses even if unchanged
    courses: set[str] = field(default_factory=set)  #: only these courses (empty: all)
    no_wait: bool = False
    verbose: bool = False


def data_root_tag(out: Path) -> str:
    """A short digest naming the data root in run tags (no path in Dagster's storage)."""
    return digest_of([str(Path(out).resolve())])[:12]


def run_config(settings: Settings, verbose: bool) -> dict:
    """Every CLI run's settings as run config: the resources, the step workers, the log level."""
    from rt_resources.resources import run_config as resources_run_config

    return {
        **resources_run_config(settings),
        "execution": {"config": {"workers": settings.cpu_workers()}},
        "loggers": {"console": {"config": {"log_level": "DEBUG" if verbose else "WARNING"}}},
    }


def parallelization_block(instance, settings: Settings, availability, daemon: str) -> str:
    from rt_assets.executors import executor_kind
    from rt_resources.segmentation.totalseg import default_threads

    cores = os.cpu_count() or 1
    workers = settings.cpu_workers()
    kind = executor_kind(settings)
    steps = {
        "in_process": "steps in process (a process per step would only add start-up)",
        "celery": f"steps on Celery workers via {settings.celery.broker} (GPU steps on queue gpu)",
        "k8s": "one Kubernetes job per step",
    }.get(kind, f"{workers} steps at once, forked from a preloaded forkserver")
    try:
        runs_at_once = instance.get_concurrency_config().run_queue_config.max_concurrent_runs
    except Exception:  # an instance without a run queue config
        runs_at_once = "?"
    rad = settings.radiomics
    radiomics = "sequential, in process" if rad.sequential else f"{rad.workers or workers} workers, thread_limit=1 each"
    if availability.any:
        seg = (
            f"{', '.join(availability.available_assets())}: one inference per GPU slot, "
            f"{settings.gpu.prefetch} more waiting with its input ready (pool gpu, runs tagged rt/gpu); "
            "the model stays loaded in a worker per device"
        )
        seg += f", device {settings.totalsegmentator.device}, {default_threads()} resampling threads"
    else:
        seg = "none available (no TotalSegmentator weights, no custom models): no segmentation run"
    lines = [
        "=== Parallelization Configuration ===",
        f"CPU cores:                          {cores}",
        f"CPU workers per run (--workers):    {workers}" + ("  (default: cores - 1)" if not settings.workers else ""),
        f"Steps within a run:                 {steps}",
        f"Runs at once (run queue):           {runs_at_once} (dagster.yaml concurrency.runs), one per course",
        f"Run priority (--priority):          {settings.priority}"
        + (" (small courses first)" if settings.priority == "size" else " (order of arrival)"),
        f"Segmentation:                       {seg}",
        "DVH:                                contour-based (manual ROIs) and mask-based (other mask sources)",
        f"Radiomics:                          {radiomics}",
        f"Daemon launching the runs:          {daemon}",
        "=====================================",
    ]
    return "\n".join(lines)


def execute(opts: RunOptions) -> int:
    """Index, plan, submit, follow, summarize. See the module docstring for the exit codes."""
    from rt_assets.headless.instance import DataRootBusy, DataRootLock, HomeError, prepare_home, resolve_home
    from rt_resources.state import state_dir

    settings, out = opts.settings, opts.out
    try:
        home = prepare_home(resolve_home(out))
    except HomeError as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    try:
        lock = DataRootLock(out, state_dir(out, settings.state_dir)).acquire()
    except DataRootBusy as exc:
        log.error("%s", exc)
        return EXIT_BUSY
    except OSError as exc:
        log.error("data root %s cannot be written: %s", out, exc)
        return EXIT_USAGE
    try:
        write_settings(settings, home / INSTANCE_SETTINGS_FILE)  # the code location a daemon loads sees them too
        use_settings(settings)
        return _execute_locked(opts, home, lock.session)
    finally:
        use_settings(None)
        lock.release()


def _execute_locked(opts: RunOptions, home: Path, session: str) -> int:
    from rt_assets.gpu_pool import ensure_gpu_pool
    from rt_assets.headless.daemon import running_daemon
    from rt_assets.headless.plan import Planner
    from rt_assets.headless.preflight import ServiceDown, open_checked, preflight
    from rt_assets.headless.recovery import recover
    from rt_assets.headless.submit import Submitter
    from rt_assets.partitions import course_partitions
    from rt_resources.gpu_leases import gpu_slots
    from rt_resources.ingest.survey import survey_drop
    from rt_resources.resources import resources_from_settings
    from rt_resources.segmentation.availability import segmentation_availability
    from rt_resources.state import state_dir

    settings, drop, out = opts.settings, opts.drop, opts.out
    try:
        instance = open_checked(home)
        preflight(instance, settings)
    except ServiceDown as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    if settings.step_executor not in ("celery", "k8s"):  # a cluster's pool is its GPU workers': set by hand
        # pool gpu = this machine's slots, plus the steps that wait at the lease with their input ready
        gpu_warning = ensure_gpu_pool(instance, gpu_slots(settings.gpu).count + settings.gpu.prefetch)
        if gpu_warning:
            log.warning("%s", gpu_warning)
    availability = segmentation_availability(settings)
    live = running_daemon(instance, home)
    if opts.no_wait and not live:
        log.error(
            "--no-wait needs a Dagster daemon running for the instance %s (make ui, dagster dev or dagster-daemon "
            "run with DAGSTER_HOME=%s): otherwise nothing would launch the queued runs",
            home,
            home,
        )
        return EXIT_USAGE
    log.info("\n%s", parallelization_block(instance, settings, availability, live or "started by this command"))
    log.info("drop folder %s -> data root %s (Dagster instance %s)", drop, out, home)
    if not availability.any:
        log.warning("segmentation skipped (no run is launched for it): %s", availability.totalseg_detail)

    survey = survey_drop(drop, out, index_dir=state_dir(out, opts.settings.state_dir))
    scan = survey.scan
    log.info(
        "indexed %d files in %.2f s (%d parsed, %d unchanged); %d courses; %d files not used",
        len(scan.entries),
        scan.seconds,
        scan.n_parsed,
        len(scan.entries) - scan.n_parsed,
        len(survey.courses),
        len(survey.links.rejections),
    )
    for r in survey.links.rejections:
        log.warning("not used: %s: %s", r.path, r.reason)
    unknown = opts.courses - {c.key for c in survey.courses}
    if unknown:
        log.error(
            "--course %s: not a course of this drop (courses: %s)",
            ", ".join(sorted(unknown)),
            ", ".join(c.key for c in survey.courses) or "none",
        )
        return EXIT_USAGE
    courses = [c for c in survey.courses if not opts.courses or c.key in opts.courses]
    known = set(instance.get_dynamic_partitions(course_partitions.name))
    new_keys = [c.key for c in survey.courses if c.key not in known]
    if new_keys:
        instance.add_dynamic_partitions(course_partitions.name, new_keys)
    for line in recover(instance, data_root_tag(out), session):
        log.warning("recovered from an earlier crash: %s", line)
    daemons = Daemons(instance, home, out / "logs")
    try:
        if not live and (new_keys or opts.force) and not opts.no_wait:
            daemons.launch_early()  # work is certain: the daemon loads its code location while this plans
        module = sys.modules.get("rt_assets.definitions")
        defs = importlib.reload(module).defs if module else importlib.import_module("rt_assets.definitions").defs
        planner = Planner(instance, defs, resources_from_settings(settings))
        plans = planner.plan_courses(courses, opts.force)
        with Submitter(instance) as submitter:
            return _submit_and_follow(
                opts, instance, home, session, survey, courses, plans, planner, submitter, availability, daemons
            )
    finally:
        daemons.stop()


class Daemons:
    """The daemon this command relies on: one already heartbeating for the instance, else its own
    (started early when work is certain, else on first need, again if it dies)."""

    def __init__(self, instance, home: Path, log_dir: Path) -> None:
        self.instance, self.home, self.log_dir = instance, home, log_dir
        self.own = None

    def _new(self):
        from rt_assets.headless.daemon import QueueDaemon

        # its log is where its runs' workers print, so it lives beside the data, not in the instance
        return QueueDaemon(self.home, self.log_dir / "rtpipeline-daemon.log")

    def launch_early(self) -> None:
        self.own = self._new()
        self.own.launch()

    def ensure(self) -> None:
        from rt_assets.headless.daemon import running_daemon

        if self.own is not None and self.own.alive():
            self.own.wait_ready(self.instance)
            return
        if running_daemon(self.instance, self.home):
            return
        if self.own is not None:
            log.warning("the run-queue daemon exited; starting it again (log: %s)", self.own.log_path)
        self.own = self._new()
        self.own.start(self.instance)

    def stop(self) -> None:
        if self.own is not None:
            self.own.stop()


def _submit_and_follow(
    opts, instance, home, session, survey, courses, plans, planner, submitter, availability, daemons: Daemons
) -> int:
    """Submit the first stage of every course, follow them all, then the cohort tables; summary."""
    from rt_assets.headless.follow import Follower, Progress, cancel_runs
    from rt_assets.run_tags import course_tags
    from rt_resources.ingest.request_ledger import RequestLedger
    from rt_resources.state import ledger_path, state_dir

    settings, out = opts.settings, opts.out
    config = run_config(settings, opts.verbose)
    base_tags = {TAG_CLI_SESSION: session, TAG_DATA_ROOT: data_root_tag(out), TAG_LAUNCHED_BY: "cli"}
    ledger = RequestLedger(ledger_path(state_dir(out, settings.state_dir)))

    def submit(job: str, course, stage: str, assets=None) -> str:
        gpu, derived = job == SEGMENTATION_JOB, job == DERIVED_JOB
        tags = {**course_tags(course, "cli", settings.priority, gpu=gpu, derived=derived), **base_tags}
        run_id = submitter.submit(job, {**tags, TAG_STAGE: stage}, config, partition_key=course.key, assets=assets)
        if job == COURSE_JOB:  # the drop sensor will not request this content again
            ledger.record({course.key: course.fingerprint}, 0)
        return run_id

    custom_rules = bool(settings.segmentation.custom_structures)
    follower = Follower(instance, planner, submit, availability.available_assets(), custom_rules, daemons.ensure)
    progress = None
    try:
        follower.start(plans)
        if opts.no_wait:
            unchanged = sum(1 for p in plans if not p.course_assets)
            print(
                f"queued {len(follower.session_runs())} course runs on {home}; the daemon launches them "
                f"(follow them in the UI; unchanged courses: {unchanged})"
            )
            return EXIT_OK
        if not all(s.finished for s in follower.states):
            daemons.ensure()
        progress = Progress(len(follower.states))
        follower.follow(progress)
        why = planner.cohort_needed(survey.state, any(s.stages_run for s in follower.states))
        cohort_ok, cohort_error = True, ""
        if why:
            log.info("cohort tables: rebuilding (%s)", why)
            run_id = submitter.submit(COHORT_JOB, {**base_tags, TAG_STAGE: "cohort"}, config)
            daemons.ensure()
            cohort_ok, cohort_error = follower.wait_for(run_id)
        else:
            log.info("cohort tables: up to date")
    except KeyboardInterrupt:
        n = cancel_runs(instance, follower.session_runs())
        log.error("interrupted: %d queued or running runs of this command cancelled", n)
        return EXIT_INTERRUPTED
    finally:
        if progress is not None:
            progress.close()
    _print_summary(follower.states, survey, out, home, opts.drop, cohort_ok, cohort_error, bool(why))
    if not courses:
        log.error("no course found in %s", opts.drop)
        return EXIT_FAILED
    failed = any(s.status == "FAILED" for s in follower.states) or not cohort_ok
    return EXIT_FAILED if failed else EXIT_OK


def _print_summary(states, survey, out: Path, home: Path, drop: Path, cohort_ok, cohort_error, rebuilt) -> None:
    from rt_assets.headless.summary import course_table

    print("\n=== Courses ===")
    print(course_table(states, out))
    counts = {k: sum(1 for s in states if s.status == k) for k in ("ok", "unchanged", "FAILED")}
    print(f"{counts['ok']} processed, {counts['unchanged']} unchanged, {counts['FAILED']} failed")
    cohort = ("rebuilt" if rebuilt else "up to date") if cohort_ok else "FAILED: " + cohort_error
    print(f"cohort tables: {out / 'cohort'} ({cohort})")
    print(f"files not used: {len(survey.links.rejections)} (see {out / 'cohort' / 'ingest_report.parquet'})")
    print(f"DVH metrics of all courses: {out / 'cohort' / 'dvh_metrics.parquet'}")
    print(f"radiomics of all courses:   {out / 'cohort' / 'radiomics.parquet'}")
    if (out / "cohort" / "radiomics_robustness.parquet").exists():
        print(f"feature robustness (ICC):   {out / 'cohort' / 'radiomics_robustness.parquet'}")
    print(f"quality checks:             {out / 'cohort' / 'qc.parquet'} (per course: courses/<key>/qc.json)")
    print(f"where a number came from:   rtpipeline audit --outdir {out} --course <key> [--roi NAME --metric d95_gy]")
    print(f"runs and lineage in the UI: DAGSTER_HOME={home} dagster dev -w workspace.yaml")
    print(f"    (the instance's settings, drop {drop} included, are in {home / INSTANCE_SETTINGS_FILE})")
