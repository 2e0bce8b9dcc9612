"""Dagster's default run launcher, able to tell whether a run's worker process still lives.

Dagster's ``DefaultRunLauncher`` starts each run in a worker process on the code server's
machine, but cannot say whether that process is still alive, so run monitoring leaves a run
whose worker was killed (``kill -9``, out-of-memory killer, power loss) STARTED for ever, holding
its pool slot and its place under the run limits. This launcher adds that one answer:

* at launch it tags the run with the host that starts its worker (``rt/worker_host``);
* the worker records its pid in the run's first engine event ("Started process for run
  (pid: N)", written by Dagster itself);
* :meth:`check_run_worker_health` is FAILED when, on that host, no process with that pid exists,
  it is a zombie, or it started after the event (the pid was reused). Run monitoring then marks
  the run failed and frees its concurrency slots. Workers on another host are reported RUNNING
  (this launcher cannot see them).

``rtpipeline run`` asks the same question when it starts, so a crash of a previous run is
recovered without waiting for the monitoring interval. Configured in dagster.yaml::

    run_launcher:
      module: rt_assets.run_launcher
      class: LocalRunLauncher
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

from dagster import DagsterEventType, DagsterRun, DefaultRunLauncher
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, WorkerStatus

HOST_TAG = "rt/worker_host"
_PID = re.compile(r"Started process for run \(pid: (\d+)\)")
#: a process that started this many seconds after the engine event cannot be the run's worker
_START_SLACK_S = 2.0


def worker_pid(instance, run_id: str) -> tuple[int, float] | None:
    """(pid, event time) of the run's worker, from Dagster's "Started process for run" event."""
    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=50).records
    for record in records:
        entry = record.event_log_entry
        message = (entry.dagster_event.message if entry.dagster_event else None) or entry.user_message or ""
        match = _PID.search(message)
        if match:
            return int(match.group(1)), entry.timestamp
    return None


def _process_start_time(pid: int) -> float | None:
    """Start time (epoch s) of process ``pid`` from /proc, None if there is none or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
    except (OSError, StopIteration, ValueError):
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
    if fields[0] in ("Z", "X"):
        return None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")


def worker_alive(pid: int, started_at: float) -> bool:
    """True if process ``pid`` exists here, is not a zombie, and started before ``started_at``."""
    start = _process_start_time(pid)
    if start is None:
        if Path("/proc").is_dir():
            return False
        try:  # no /proc (macOS): existence only
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
    return start <= started_at + _START_SLACK_S


def run_worker_health(instance, run: DagsterRun) -> CheckRunHealthResult:
    """RUNNING, or FAILED with the reason, for a run started by :class:`LocalRunLauncher`."""
    host = run.tags.get(HOST_TAG)
    if host and host != socket.gethostname():
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker on host {host}: not visible from here")
    found = worker_pid(instance, run.run_id)
    if found is None:
        return CheckRunHealthResult(WorkerStatus.RUNNING, "no worker process recorded yet")
    pid, at = found
    if worker_alive(pid, at):
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker process {pid} alive")
    return CheckRunHealthResult(
        WorkerStatus.FAILED, f"the run's worker process {pid} on {socket.gethostname()} is gone (killed or crashed)"
    )


class LocalRunLauncher(DefaultRunLauncher):
    """DefaultRunLauncher with a worker health check (see the module docstring)."""

    def launch_run(self, context: LaunchRunContext) -> None:
        self._instance.add_run_tags(context.dagster_run.run_id, {HOST_TAG: socket.gethostname()})
        super().launch_run(context)

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        return run_worker_health(self._instance, run)
