"""The step executor: the steps of a run in parallel processes, (CPU cores - 1) by default.

* With two or more step workers (the settings' ``workers``, default CPU cores - 1), the
  multiprocess executor runs that many steps at once. Its step processes start from a
  *forkserver* that has already imported the code location and the instance's storage modules
  (:mod:`rt_assets.step_preload`: Dagster, SQLAlchemy, pandas, pydicom, SimpleITK, ...): a
  spawned step process pays those imports again (about 3 s per step on a 2-core machine), a
  step forked from the preloaded server starts in about 0.1 s. The forkserver is a fresh
  single-threaded process, so forking from it is safe (unlike forking the webserver or daemon).
* With a single step worker (a 2-core machine), a step process could never run beside another
  one: it would only add its start-up to every step. Such runs use the in-process executor
  (the course's own CPU fan-outs, radiomics and DVH ROIs, still use the process pool of
  :mod:`rt_resources.parallel`). ``benchmarks/overhead.py`` measures the variants.

The executor takes ``workers`` as run config (``execution: {config: {workers: N}}``), which is
how ``rtpipeline run --workers N`` sizes the runs it submits; runs without it use the code
location's settings. ``step_executor: multiprocess | in_process`` in the settings forces one;
``step_start_method: spawn`` restores Dagster's default start method.
"""

from __future__ import annotations

from dagster import ExecutorDefinition, Field, Int, multi_or_in_process_executor

from rt_resources.settings import Settings

PRELOAD = ["rt_assets.step_preload"]


def executor_config(settings: Settings, workers: int | None = None) -> dict:
    """The config of Dagster's multi-or-in-process executor for ``workers`` step workers."""
    workers = workers or settings.cpu_workers()
    choice = settings.step_executor
    if choice == "in_process" or (choice == "auto" and workers == 1):
        return {"in_process": {}}
    if settings.step_start_method == "forkserver":
        start_method: dict = {"forkserver": {"preload_modules": PRELOAD}}
    else:
        start_method = {settings.step_start_method: {}}
    return {"multiprocess": {"max_concurrent": workers, "start_method": start_method}}


def step_executor(settings: Settings) -> ExecutorDefinition:
    """Multiprocess with the settings' workers, or in process when that is 1; ``workers`` can be
    given per run as run config."""

    def configure(config: dict) -> dict:
        return executor_config(settings, config["workers"])

    return multi_or_in_process_executor.configured(
        configure,
        name="rt_executor",
        config_schema={"workers": Field(Int, is_required=False, default_value=settings.cpu_workers())},
    )


def executor_kind(settings: Settings, workers: int | None = None) -> str:
    """``in_process`` or ``multiprocess``: what a run with ``workers`` step workers uses."""
    return next(iter(executor_config(settings, workers)))


__all__ = ["PRELOAD", "executor_config", "executor_kind", "step_executor"]
