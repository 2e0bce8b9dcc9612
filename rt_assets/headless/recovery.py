"""Clean up after a crash before anything is planned, so the next run completes with no manual step.

* A run whose worker process is gone (the CLI, the daemon or the worker itself killed) is marked
  FAILED, with the same worker check that run monitoring uses (:mod:`rt_assets.run_launcher`), and
  its concurrency slots are freed at once; its course then runs again ("last run failed").
* A run still QUEUED by an earlier ``rtpipeline run`` on this data root is cancelled: that CLI
  held the data-root lock this one now holds, so it is gone; the course is planned afresh.
* A run whose worker is alive (a killed CLI's run that goes on in the background) is left alone:
  the CLI waits for it before it plans that course.
"""

from __future__ import annotations

import time

from dagster import DagsterRunStatus, RunsFilter

from rt_assets.constants import TAG_CLI_SESSION, TAG_DATA_ROOT


def _free_slots(instance, run_id: str) -> None:
    try:
        instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    except NotImplementedError:  # storages without pools
        pass


def fail_orphans(instance, run_ids: list[str] | None = None) -> list[str]:
    """Mark failed the in-flight runs (of ``run_ids``, or all) whose worker is gone, or that have
    been STARTING without a worker for longer than run monitoring's start timeout; free their
    concurrency slots. Returns what was done, one line each."""
    from dagster._core.launcher import WorkerStatus

    from rt_assets.run_launcher import run_worker_health, worker_pid

    done: list[str] = []
    in_flight = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
    grace = float(instance.run_monitoring_start_timeout_seconds)
    for record in instance.get_run_records(RunsFilter(statuses=in_flight, run_ids=run_ids)):
        run = record.dagster_run
        if run.status == DagsterRunStatus.STARTING:
            age = time.time() - record.update_timestamp.timestamp()
            if worker_pid(instance, run.run_id) is not None or age < grace:
                continue
            why = f"it was STARTING for {age:.0f} s without a worker (its launch died)"
        else:
            health = run_worker_health(instance, run)
            if health.status != WorkerStatus.FAILED:
                continue
            why = health.msg
        message = f"rtpipeline run: marked failed: {why}"
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
        _free_slots(instance, run.run_id)
        done.append(f"run {run.run_id[:8]} ({run.job_name} {run.tags.get('dagster/partition', '')}): {why}")
    return done


def recover(instance, data_root_tag: str, session: str) -> list[str]:
    """Fail orphaned runs and cancel an earlier CLI's queued runs; returns what was done, one line each."""
    done = fail_orphans(instance)
    queued = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]
    for run in instance.get_runs(RunsFilter(statuses=queued, tags={TAG_DATA_ROOT: data_root_tag})):
        if run.tags.get(TAG_CLI_SESSION) and run.tags.get(TAG_CLI_SESSION) != session:
            instance.report_run_canceled(run, "rtpipeline run: the CLI run that queued it is gone; planned afresh")
            done.append(f"run {run.run_id[:8]} ({run.job_name} {run.tags.get('dagster/partition', '')}): cancelled")
    return done
