"""Run the asset graph without the UI: what ``rtpipeline run`` does.

Each course is one run of ``course_job`` for its partition, executed through Dagster
(``execute_job``) against the persistent instance in ``$DAGSTER_HOME``, so the runs,
their logs and every materialization appear in the UI afterwards. Up to ``workers``
course runs go at once, each in its own process with its steps in process (total busy
processes = workers). Runs from the UI or the sensor use the multiprocess executor
instead (parallel steps within a run).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from dagster import DagsterInstance, JobDefinition, execute_job, in_process_executor, reconstructable

from rt_assets.constants import (
    COHORT_JOB,
    COURSE_JOB,
    DERIVED_JOB,
    SEGMENTATION_JOB,
    TAG_COURSE,
    TAG_FINGERPRINT,
    TAG_GPU,
    TAG_LAUNCHED_BY,
)

log = logging.getLogger("rtpipeline")

PROJECT_DAGSTER_YAML = Path(__file__).resolve().parent.parent / "dagster.yaml"


def _in_process_definitions():
    from rt_assets.definitions import build_definitions

    return build_definitions(in_process_executor)


def course_job_in_process() -> JobDefinition:
    return _in_process_definitions().resolve_job_def(COURSE_JOB)


def segmentation_job_in_process() -> JobDefinition:
    return _in_process_definitions().resolve_job_def(SEGMENTATION_JOB)


def derived_job_in_process() -> JobDefinition:
    return _in_process_definitions().resolve_job_def(DERIVED_JOB)


def cohort_job_in_process() -> JobDefinition:
    return _in_process_definitions().resolve_job_def(COHORT_JOB)


#: per-course jobs the CLI runs, in order; module-level functions so they are reconstructable
COURSE_PHASES = {
    COURSE_JOB: course_job_in_process,
    SEGMENTATION_JOB: segmentation_job_in_process,
    DERIVED_JOB: derived_job_in_process,
}


@dataclass
class RunOutcome:
    subject: str  #: course key, or "cohort"
    success: bool
    run_id: str
    error: str = ""
    job: str = ""


def ensure_dagster_home(default: Path) -> Path:
    """Use ``$DAGSTER_HOME``, else ``default`` holding a copy of the project's dagster.yaml."""
    if os.environ.get("DAGSTER_HOME"):
        home = Path(os.environ["DAGSTER_HOME"])
    else:
        home = Path(default).resolve()
        os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() and PROJECT_DAGSTER_YAML.exists():
        config.write_text(PROJECT_DAGSTER_YAML.read_text())
    return home


def _first_error(result) -> str:
    """The message of the first failed step, without Dagster's exception class prefix."""
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            message = event.step_failure_data.error.message.strip()
            if message.startswith("dagster.") and ": " in message:
                message = message.split(": ", 1)[1]
            return f"{event.step_key}: {message}"
    return "run failed (see the run's logs in the UI)"


def _run_config() -> dict:
    """Dagster's console logger at ``$RT_CLI_LOG_LEVEL`` (WARNING unless -v): the CLI prints its own summary."""
    return {"loggers": {"console": {"config": {"log_level": os.environ.get("RT_CLI_LOG_LEVEL", "WARNING")}}}}


def execute_course(course_key: str, fingerprint: str, job_name: str = COURSE_JOB) -> RunOutcome:
    """One run of a per-course job for ``course_key`` (safe to call in a worker process)."""
    instance = DagsterInstance.get()
    tags = {
        "dagster/partition": course_key,
        TAG_COURSE: course_key,
        TAG_FINGERPRINT: fingerprint[:16],
        TAG_LAUNCHED_BY: "cli",
    }
    if job_name == SEGMENTATION_JOB:
        tags[TAG_GPU] = "true"
    result = execute_job(
        reconstructable(COURSE_PHASES[job_name]),
        instance=instance,
        run_config=_run_config(),
        tags=tags,
    )
    error = "" if result.success else _first_error(result)
    return RunOutcome(course_key, result.success, result.run_id, error, job_name)


def execute_cohort() -> RunOutcome:
    instance = DagsterInstance.get()
    result = execute_job(
        reconstructable(cohort_job_in_process),
        instance=instance,
        run_config=_run_config(),
        tags={TAG_LAUNCHED_BY: "cli"},
    )
    return RunOutcome("cohort", result.success, result.run_id, "" if result.success else _first_error(result))


def run_courses(courses: list[tuple[str, str]], workers: int, job_name: str = COURSE_JOB) -> list[RunOutcome]:
    """Run a per-course job for ``(course_key, fingerprint)`` pairs, ``workers`` at a time;
    never raises for one course."""
    from rt_assets.partitions import course_partitions

    instance = DagsterInstance.get()
    existing = set(instance.get_dynamic_partitions(course_partitions.name))
    new = [key for key, _ in courses if key not in existing]
    if new:
        instance.add_dynamic_partitions(course_partitions.name, new)
    outcomes: list[RunOutcome] = []
    if workers <= 1 or len(courses) <= 1:
        for key, fp in courses:
            outcomes.append(_guarded(execute_course, key, fp, job_name))
            _log_outcome(outcomes[-1])
        return outcomes
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(courses)), mp_context=ctx) as pool:
        futures = {pool.submit(execute_course, key, fp, job_name): key for key, fp in courses}
        for future in as_completed(futures):
            try:
                outcome = future.result()
            except Exception as exc:  # the worker died: report, keep going
                outcome = RunOutcome(futures[future], False, "", f"worker crashed: {exc}", job_name)
            outcomes.append(outcome)
            _log_outcome(outcome)
    return sorted(outcomes, key=lambda o: o.subject)


def _guarded(fn, *args) -> RunOutcome:
    try:
        return fn(*args)
    except Exception as exc:
        return RunOutcome(str(args[0]), False, "", f"{type(exc).__name__}: {exc}", str(args[-1]))


def _log_outcome(outcome: RunOutcome) -> None:
    if outcome.success:
        log.info("%s %s: succeeded (run %s)", outcome.subject, outcome.job, outcome.run_id[:8])
    else:
        log.error("%s %s: FAILED (run %s): %s", outcome.subject, outcome.job, outcome.run_id[:8], outcome.error)
