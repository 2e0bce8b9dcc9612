"""Follow a CLI run's courses through their stages, submitting each next stage when one succeeds.

A course goes through up to three runs: the course stage (``course_job``, or the part of it that
changed), segmentation (``segmentation_job``, tagged ``rt/gpu``; only the assets that can run
here), and the derived stage (``derived_job``). Each is submitted as soon as the previous one
succeeded, so a course's segmentation starts while other courses' CPU stages go on; the run queue
decides when each launches (priority, run limits, the ``gpu`` pool). When every course is done,
the cohort tables are rebuilt if anything changed. Runs of a course already in flight when the CLI
starts (a killed CLI's run still going) are waited for, then the course is planned afresh.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dagster import DagsterEventType, DagsterRunStatus, RunsFilter

from rt_assets.constants import COURSE_JOB, DERIVED_JOB, SEGMENTATION_JOB, TOTALSEG_ASSETS
from rt_assets.headless.plan import UNFINISHED, CoursePlan, Planner
from rt_resources.ingest.linking import Course

log = logging.getLogger("rtpipeline")

POLL_S = 0.5
DAEMON_CHECK_S = 15.0

QUEUED_STATES = (DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED)


@dataclass
class CourseState:
    course: Course
    plan: CoursePlan
    stage: str = ""  #: the stage whose run is awaited ("" before the first, "adopted" for an earlier run)
    run_ids: list[str] = field(default_factory=list)  #: awaited runs
    status: str = "pending"  #: pending | queued | running | ok | unchanged | FAILED
    error: str = ""
    stages_run: list[str] = field(default_factory=list)
    all_runs: list[str] = field(default_factory=list)
    #: course-stage assets left to the derived stage (which computes them with the auto structures)
    deferred: list[str] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.status in ("ok", "unchanged", "FAILED")


def run_error(instance, run_id: str) -> str:
    """The first failed step's message (without Dagster's exception class prefix), else the run's."""
    for entry in instance.all_logs(run_id, of_type={DagsterEventType.STEP_FAILURE, DagsterEventType.RUN_FAILURE}):
        event = entry.dagster_event
        if (
            event.event_type == DagsterEventType.STEP_FAILURE
            and event.step_failure_data
            and event.step_failure_data.error
        ):
            message = event.step_failure_data.error.message.strip()
            if message.startswith("dagster.") and ": " in message:
                message = message.split(": ", 1)[1]
            return f"{event.step_key}: {message}"
    for entry in instance.all_logs(run_id, of_type=DagsterEventType.RUN_FAILURE):
        return (entry.message or entry.user_message or "run failed").strip()
    run = instance.get_run_by_id(run_id)
    return f"run {run.status.value.lower()}" if run else "run not found"


class Progress:
    """Courses done / failed / queued / running: a rich progress bar on a terminal, else one log
    line per change (CI logs, pipes)."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._last = None
        self._bar = None
        if sys.stderr.isatty() and total:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("courses"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                transient=False,
            )
            self._bar.start()
            self._task = self._bar.add_task("", total=total)

    def update(self, states: list[CourseState], extra: str = "") -> None:
        counts = {
            k: sum(1 for s in states if s.status == k) for k in ("ok", "unchanged", "FAILED", "queued", "running")
        }
        done = counts["ok"] + counts["unchanged"] + counts["FAILED"]
        text = (
            f"{counts['ok']} done, {counts['unchanged']} unchanged, {counts['FAILED']} failed, "
            f"{counts['running']} running, {counts['queued']} queued" + (f"; {extra}" if extra else "")
        )
        if (done, text) == self._last:
            return
        self._last = (done, text)
        if self._bar is not None:
            self._bar.update(self._task, completed=done, description=text)
        else:
            log.info("progress: %d/%d courses finished (%s)", done, self.total, text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class Follower:
    """Submits and follows the stages of every course (see the module docstring)."""

    def __init__(
        self,
        instance,
        planner: Planner,
        submit: Callable[..., str],
        segmentation_assets: list[str],
        custom_rules: bool,
        ensure_daemon: Callable[[], None],
    ) -> None:
        self.instance = instance
        self.planner = planner
        self.submit = submit  #: submit(job, course, stage, assets=None) -> run id
        self.segmentation_assets = segmentation_assets
        self.custom_rules = custom_rules
        self.ensure_daemon = ensure_daemon
        self.states: list[CourseState] = []
        #: the derived job's assets, less TotalSegmentator's masks and RTSTRUCT where it cannot run
        #: (an unmaterialized output would make Dagster skip the DVH and radiomics after it)
        self.derived_assets = None if "totalseg_inference" in segmentation_assets else derived_without_totalseg(planner)
        #: where a segmentation can run, the course stage leaves the DVH, radiomics and preview to the
        #: derived stage, which computes them once with every mask source: the course stage is then
        #: short, so the next course's input is ready before the GPU is free
        self.deferrable = set(planner.derived_assets) & set(planner.course_job_assets) if segmentation_assets else set()

    # ----------------------------------------------------------------- stages

    def _await(self, state: CourseState, stage: str, run_id: str) -> None:
        state.stage, state.run_ids, state.status = stage, [run_id], "queued"
        state.all_runs.append(run_id)
        state.stages_run.append(stage)

    def _next(self, state: CourseState) -> None:
        """Submit the stage after ``state.stage`` that the course needs, or finish it."""
        key = state.course.key
        order = ["", "course", "segmentation", "derived"]
        for stage in order[order.index(state.stage if state.stage in order else "") + 1 :]:
            if stage == "course" and state.plan.course_assets:
                assets = list(state.plan.course_assets)
                if self.deferrable:
                    state.deferred = [a for a in assets if a in self.deferrable]
                    assets = [a for a in assets if a not in self.deferrable]
                if assets:
                    whole = state.plan.full and not state.deferred
                    self._await(
                        state, stage, self.submit(COURSE_JOB, state.course, stage, assets=None if whole else assets)
                    )
                    return
            if stage == "segmentation":
                needed = self.planner.segmentation_needed(key, self.segmentation_assets)
                if needed:
                    self._await(state, stage, self.submit(SEGMENTATION_JOB, state.course, stage, assets=needed))
                    return
            if stage == "derived":
                if self.planner.derived_needed(key, "segmentation" in state.stages_run, self.custom_rules):
                    self._await(state, stage, self.submit(DERIVED_JOB, state.course, stage, assets=self.derived_assets))
                    return
                if state.deferred:  # nothing new from segmentation: only what the course stage left
                    self._await(state, stage, self.submit(DERIVED_JOB, state.course, stage, assets=state.deferred))
                    return
        state.stage, state.run_ids = "done", []
        state.status = "ok" if state.stages_run else "unchanged"

    def start(self, plans: list[CoursePlan]) -> None:
        """Adopt runs already in flight for these courses; submit the first stage of the others."""
        keys = {p.course.key for p in plans}
        in_flight: dict[str, list[str]] = {}
        for run in self.instance.get_runs(RunsFilter(statuses=list(UNFINISHED))):
            key = run.tags.get("dagster/partition", "")
            if key in keys:
                in_flight.setdefault(key, []).append(run.run_id)
        for plan in plans:
            state = CourseState(plan.course, plan)
            self.states.append(state)
            if plan.course.key in in_flight:
                state.stage, state.run_ids, state.status = "adopted", in_flight[plan.course.key], "running"
                log.info(
                    "%s: waiting for run(s) already in flight: %s",
                    plan.course.key,
                    ", ".join(r[:8] for r in state.run_ids),
                )
            else:
                self._next(state)

    # ----------------------------------------------------------------- following

    def _awaited_runs(self) -> dict[str, object]:
        """Every run an unfinished course awaits, by id: one query per poll, not one per course."""
        ids = [r for s in self.states if not s.finished for r in s.run_ids]
        return {r.run_id: r for r in self.instance.get_runs(RunsFilter(run_ids=ids))} if ids else {}

    def _poll(self, state: CourseState, runs: dict[str, object]) -> None:
        statuses = [runs[r].status if r in runs else DagsterRunStatus.FAILURE for r in state.run_ids]
        if any(s in UNFINISHED for s in statuses):
            state.status = "queued" if all(s in QUEUED_STATES for s in statuses if s in UNFINISHED) else "running"
            return
        if state.stage == "adopted":  # an earlier run finished: plan the course afresh
            state.plan = self.planner.plan_courses([state.course], False)[0]
            state.stage, state.run_ids = "", []
            state.stages_run.append("adopted")
            self._next(state)
            return
        failed = [r for r, s in zip(state.run_ids, statuses, strict=True) if s != DagsterRunStatus.SUCCESS]
        if failed:
            state.status, state.error = "FAILED", f"{state.stage} stage: {run_error(self.instance, failed[0])}"
            state.run_ids = []
            log.error("%s: FAILED (run %s): %s", state.course.key, failed[0][:8], state.error)
            return
        log.info("%s: %s stage succeeded (run %s)", state.course.key, state.stage, state.run_ids[0][:8])
        self._next(state)

    def follow(self, progress: Progress) -> None:
        """Poll until every course is finished; keeps a daemon alive meanwhile."""
        last_daemon_check = time.time()
        while True:
            runs = self._awaited_runs()
            for state in self.states:
                if not state.finished:
                    self._poll(state, runs)
            progress.update(self.states)
            if all(s.finished for s in self.states):
                return
            if time.time() - last_daemon_check > DAEMON_CHECK_S:
                self.ensure_daemon()
                self._fail_orphans()
                last_daemon_check = time.time()
            time.sleep(POLL_S)

    def _fail_orphans(self) -> None:
        """A run awaited here whose worker died (a killed daemon or worker) fails now, not never."""
        from rt_assets.headless.recovery import fail_orphans

        awaited = [r for s in self.states if not s.finished for r in s.run_ids]
        for line in fail_orphans(self.instance, awaited) if awaited else []:
            log.warning("run failed while followed: %s", line)

    def wait_for(self, run_id: str) -> tuple[bool, str]:
        """Wait for one run (the cohort run); (success, error)."""
        last_daemon_check = time.time()
        while True:
            run = self.instance.get_run_by_id(run_id)
            if run is not None and run.is_finished:
                ok = run.status == DagsterRunStatus.SUCCESS
                return ok, "" if ok else run_error(self.instance, run_id)
            if time.time() - last_daemon_check > DAEMON_CHECK_S:
                self.ensure_daemon()
                from rt_assets.headless.recovery import fail_orphans

                fail_orphans(self.instance, [run_id])
                last_daemon_check = time.time()
            time.sleep(POLL_S)

    def session_runs(self) -> list[str]:
        return [r for s in self.states for r in s.all_runs]


def derived_without_totalseg(planner: Planner) -> list[str]:
    """The assets of ``derived_job`` but TotalSegmentator's post-processing steps."""
    return sorted(set(planner.derived_assets) - set(TOTALSEG_ASSETS))


def cancel_runs(instance, run_ids: list[str]) -> int:
    """Cancel queued runs and ask in-flight ones to stop (Ctrl-C of the CLI); returns how many."""
    n = 0
    for run in instance.get_runs(RunsFilter(run_ids=run_ids)) if run_ids else []:
        if run.status in QUEUED_STATES:
            instance.report_run_canceled(run, "rtpipeline run interrupted (Ctrl-C)")
            n += 1
        elif run.status in (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED):
            try:
                instance.run_launcher.terminate(run.run_id)
            except Exception as exc:  # the worker may be gone already: recovery fails the run next time
                log.warning("could not stop run %s: %s", run.run_id[:8], exc)
            n += 1
    return n


__all__ = ["CourseState", "Follower", "Progress", "cancel_runs", "run_error"]
