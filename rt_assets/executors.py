"""Executors: steps of a run in parallel processes, (CPU cores - 1) by default."""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, multiprocess_executor

WORKERS_ENV = "RT_WORKERS"


def default_workers() -> int:
    """``$RT_WORKERS`` if set, else CPU cores - 1 (at least 1): one core stays for the OS and UI."""
    configured = os.environ.get(WORKERS_ENV, "")
    if configured:
        return max(1, int(configured))
    return max(1, (os.cpu_count() or 2) - 1)


def step_executor() -> ExecutorDefinition:
    """The multiprocess executor with ``default_workers()`` concurrent step processes."""
    return multiprocess_executor.configured({"max_concurrent": default_workers()}, name="multiprocess")
