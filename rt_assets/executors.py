"""Executors: steps of a run in parallel processes, (CPU cores - 1) by default."""

from __future__ import annotations

from dagster import ExecutorDefinition, multiprocess_executor

from rt_resources.parallel import workers_from_env

WORKERS_ENV = "RT_WORKERS"


def default_workers() -> int:
    """Concurrent steps: ``$RT_WORKERS`` if set, else CPU cores - 1 (one core stays for the OS and UI)."""
    return workers_from_env(WORKERS_ENV)


def step_executor() -> ExecutorDefinition:
    """The multiprocess executor with ``default_workers()`` concurrent step processes."""
    return multiprocess_executor.configured({"max_concurrent": default_workers()}, name="multiprocess")
