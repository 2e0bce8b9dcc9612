"""dagster-celery's executor, plus a watch on the workers running the run's steps.

dagster-celery submits each step as a Celery task and waits for its result. A worker killed in
the middle of a step (``kill -9``, a node lost) never sends that result, and the run would wait
for ever. :class:`WorkerWatch` asks each worker that has *started* one of the run's steps, with
Celery's own ``ping`` control command, whether it is still there, and whether it still runs
that task (a worker restarted under the same name answers pings but has lost the step). A step
whose worker misses ``misses`` rounds in a row, or no longer runs it, gets a ``STEP_FAILURE``
event as its task's result, naming the worker and the step: the run handles it like any failed
step (its downstream steps are skipped, the others go on), fails and says why, and the next run
of the course starts it again.

Workers run with ``--pool threads`` (see ``deploy/celery/``): the step runs in a thread while the
worker's main thread answers pings (a ``solo`` worker could not answer while busy), and the step
may start process pools of its own (a ``prefork`` child, being a daemon process, may not).
"""

from __future__ import annotations

import logging
import sys
import threading

from dagster import ExecutorDefinition, executor, multiple_process_executor_requirements
from dagster._core.execution.retries import RetryMode
from dagster_celery.executor import CeleryExecutor, _submit_task

log = logging.getLogger("rtpipeline.celery")


class WorkerLost(RuntimeError):
    """The Celery worker running a step stopped answering."""


class WorkerWatch:
    """Ping the workers of started steps every ``interval_s``; fail the step of a silent one."""

    def __init__(self, app, interval_s: float = 10.0, misses: int = 2, ping_timeout_s: float = 3.0) -> None:
        self.app = app
        self.interval_s, self.misses, self.ping_timeout_s = interval_s, misses, ping_timeout_s
        self._results: dict[str, tuple[object, object]] = {}  # step key -> (result, step context)
        self._missed: dict[str, int] = {}  # worker -> rounds missed in a row
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="celery-worker-watch", daemon=True)

    def add(self, step_key: str, result, step_context=None) -> None:
        with self._lock:
            self._results[step_key] = (result, step_context)

    def __enter__(self) -> WorkerWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=self.ping_timeout_s + 5)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.check()
            except Exception as exc:  # the broker itself may be gone: the executor reports that
                log.warning("worker watch: %s", exc)

    def running(self) -> dict[str, tuple[str, object, object]]:
        """step key -> (worker hostname, result, step context) of the steps a worker has started
        and not finished."""
        out = {}
        with self._lock:
            items = list(self._results.items())
        for key, (result, step_context) in items:
            if result.ready():
                with self._lock:
                    self._results.pop(key, None)
                continue
            info = result.info if result.state == "STARTED" else None
            if isinstance(info, dict) and info.get("hostname"):
                out[key] = (info["hostname"], result, step_context)
        return out

    def _still_running(self, host: str, task_ids: set[str]) -> set[str]:
        """Which of ``task_ids`` the worker ``host`` reports as active (all of them if it cannot say)."""
        try:
            active = self.app.control.inspect([host], timeout=self.ping_timeout_s).active() or {}
        except Exception:
            return task_ids
        if host not in active:
            return task_ids
        return {t["id"] for t in active[host] or []} & task_ids

    def check(self) -> list[str]:
        """One round; returns the step keys failed because their worker is gone or lost them."""
        running = self.running()
        if not running:
            return []
        hosts = sorted({host for host, _, _ in running.values()})
        replies = self.app.control.ping(destination=hosts, timeout=self.ping_timeout_s) or []
        alive = {name for reply in replies for name in reply}
        lost: dict[str, str] = {}
        for host in hosts:  # counted once per worker and round, whatever it runs
            steps = {key: r for key, (h, r, _) in running.items() if h == host}
            if host in alive:
                self._missed.pop(host, None)
                active = self._still_running(host, {r.id for r in steps.values()})
                for key, result in steps.items():
                    if result.id not in active and not result.ready():
                        lost[key] = f'Celery worker {host} no longer runs step "{key}" (it was restarted)'
                continue
            self._missed[host] = self._missed.get(host, 0) + 1
            if self._missed[host] >= self.misses:
                for key in steps:
                    lost[key] = (
                        f'Celery worker {host} stopped answering while running step "{key}" '
                        f"({self.misses} pings of {self.ping_timeout_s:.0f} s missed)"
                    )
        for key, why in lost.items():
            _, result, step_context = running[key]
            self._fail(result, step_context, f"{why}: the step failed; run the course again once the worker is back")
        return sorted(lost)

    def _fail(self, result, step_context, message: str) -> None:
        """The task's result becomes a STEP_FAILURE event (or, without a step context, an error)."""
        log.error(message)
        if step_context is None:
            self.app.backend.mark_as_failure(result.id, WorkerLost(message))
            return
        from dagster import DagsterEvent
        from dagster._core.execution.plan.objects import StepFailureData
        from dagster._serdes import serialize_value
        from dagster._utils.error import serializable_error_info_from_exc_info

        try:
            raise WorkerLost(message)
        except WorkerLost:
            error = serializable_error_info_from_exc_info(sys.exc_info())
        event = DagsterEvent.step_failure_event(
            step_context, StepFailureData(error=error, user_failure_data=None), message=message
        )
        self.app.backend.mark_as_done(result.id, [serialize_value(event)])


class WatchedCeleryExecutor(CeleryExecutor):
    """dagster-celery's executor whose run fails a step whose worker died (:class:`WorkerWatch`)."""

    watch_interval_s: float = 10.0

    def execute(self, plan_context, execution_plan):
        from dagster_celery.core_execution_loop import core_celery_execution_loop
        from dagster_celery.make_app import make_app

        watch = WorkerWatch(make_app(self.app_args()), interval_s=self.watch_interval_s)

        def submit(app, context, step, queue, priority, known_state):
            result = _submit_task(app, context, step, queue, priority, known_state)
            watch.add(step.key, result, context.for_step(step))
            return result

        with watch:
            yield from core_celery_execution_loop(plan_context, execution_plan, step_execution_fn=submit)


def watched_celery_executor(config: dict, workers_field: dict) -> ExecutorDefinition:
    """The run's executor: :class:`WatchedCeleryExecutor` with ``config`` (dagster-celery's keys:
    broker, backend, config_source); its run config takes (and ignores) the CLI's ``workers``."""

    @executor(name="rt_executor", config_schema=workers_field, requirements=multiple_process_executor_requirements())
    def rt_celery_executor(_init_context):
        return WatchedCeleryExecutor(
            retries=RetryMode(RetryMode.ENABLED),
            broker=config.get("broker"),
            backend=config.get("backend"),
            config_source=config.get("config_source"),
            include=config.get("include"),
        )

    return rt_celery_executor
