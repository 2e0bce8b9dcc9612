"""Executors: the steps of a UI/daemon run in parallel processes, (CPU cores - 1) by default.

* With two or more step workers (``$RT_WORKERS``, default CPU cores - 1), the multiprocess
  executor runs that many steps at once. Its step processes start from a *forkserver* that has
  already imported the code location and the instance's storage modules
  (:mod:`rt_assets.step_preload`: Dagster, SQLAlchemy, pandas, pydicom, SimpleITK, ...): a
  spawned step process pays those imports again (about 3 s per step on a 2-core machine), a
  step forked from the preloaded server starts in about 0.1 s. The forkserver is a fresh
  single-threaded process, so forking from it is safe (unlike forking the webserver or daemon).
* With a single step worker (a 2-core machine), a step process could never run beside another
  one: it would only add its start-up to every step. Such runs use the in-process executor
  (the course's own CPU fan-outs, radiomics and DVH ROIs, still use the process pool of
  :mod:`rt_resources.parallel`). ``benchmarks/overhead.py`` measures the three variants.

``RT_STEP_EXECUTOR=multiprocess|in_process`` forces one; ``RT_STEP_START_METHOD=spawn`` restores
Dagster's default start method.
"""

from __future__ import annotations

import os

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from rt_resources.parallel import workers_from_env

WORKERS_ENV = "RT_WORKERS"
EXECUTOR_ENV = "RT_STEP_EXECUTOR"
START_METHOD_ENV = "RT_STEP_START_METHOD"
PRELOAD = ["rt_assets.step_preload"]


def default_workers() -> int:
    """Concurrent steps: ``$RT_WORKERS`` if set, else CPU cores - 1 (one core stays for the OS and UI)."""
    return workers_from_env(WORKERS_ENV)


def step_start_method() -> dict:
    """The multiprocess executor's ``start_method`` config: forkserver with the code preloaded."""
    method = os.environ.get(START_METHOD_ENV, "forkserver")
    if method == "forkserver":
        return {"forkserver": {"preload_modules": PRELOAD}}
    return {method: {}}


def step_executor() -> ExecutorDefinition:
    """Multiprocess with ``default_workers()`` concurrent steps, or in-process when that is 1."""
    choice = os.environ.get(EXECUTOR_ENV, "auto")
    workers = default_workers()
    if choice == "in_process" or (choice == "auto" and workers == 1):
        return in_process_executor
    config = {"max_concurrent": workers, "start_method": step_start_method()}
    return multiprocess_executor.configured(config, name="multiprocess")
