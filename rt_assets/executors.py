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

Scale-out (README "Scale-out"): ``step_executor: celery`` sends each step to Celery workers
(dagster-celery, Redis broker): steps tagged for the GPU (:data:`rt_assets.constants.GPU_STEP_TAGS`)
to the queue ``gpu``, served by one worker per GPU, every other step to ``celery.cpu_queue``.
``step_executor: k8s`` runs each step in its own Kubernetes job (dagster-k8s); the GPU tags ask
for one ``nvidia.com/gpu``. Both need an instance every worker reaches (Postgres) and the data
root mounted on every worker; the run's ``workers`` config is then the Celery workers' or the
cluster's business and is ignored.
"""

from __future__ import annotations

from dagster import ExecutorDefinition, Field, Int, multi_or_in_process_executor

from rt_resources.settings import Settings

PRELOAD = ["rt_assets.step_preload"]


def executor_config(settings: Settings, workers: int | None = None) -> dict:
    """The config of Dagster's multi-or-in-process executor for ``workers`` step workers."""
    workers = workers or settings.cpu_workers()
    choice = settings.step_executor
    if choice in ("celery", "k8s"):
        return {choice: {}}
    if choice == "in_process" or (choice == "auto" and workers == 1):
        return {"in_process": {}}
    if settings.step_start_method == "forkserver":
        start_method: dict = {"forkserver": {"preload_modules": PRELOAD}}
    else:
        start_method = {settings.step_start_method: {}}
    return {"multiprocess": {"max_concurrent": workers, "start_method": start_method}}


WORKERS_FIELD = "workers"


def celery_config(settings: Settings) -> dict:
    """dagster-celery's executor config from the settings: broker, result backend, default queue."""
    c = settings.celery
    return {
        "broker": c.broker,
        "backend": c.backend or c.broker,
        "config_source": {
            "task_default_queue": c.cpu_queue,
            "worker_prefetch_multiplier": 1,  # a worker takes one step at a time: long steps stay fair
            "task_track_started": True,  # a started step names its worker (rt_assets/celery_executor.py)
            "worker_disable_prefetch": True,  # a worker that dies holds no second, reserved step
            # a broker that is down fails the run within seconds, naming it, instead of retrying forever
            "broker_connection_retry_on_startup": False,
            "broker_transport_options": {"max_retries": 3, "interval_start": 0, "interval_step": 0.5},
            "result_backend_transport_options": {"retry_policy": {"timeout": 5.0}},
            "redis_socket_connect_timeout": 5,
        },
    }


def _scaled_executor(settings: Settings) -> ExecutorDefinition:
    """Celery or Kubernetes steps; accepts (and ignores) the ``workers`` run config of the CLI."""
    schema = {WORKERS_FIELD: Field(Int, is_required=False, default_value=settings.cpu_workers())}
    if settings.step_executor == "celery":
        from rt_assets.celery_executor import watched_celery_executor

        return watched_celery_executor(celery_config(settings), schema)
    from dagster_k8s import k8s_job_executor

    return k8s_job_executor.configured(lambda _config: {}, name="rt_executor", config_schema=schema)


def step_executor(settings: Settings) -> ExecutorDefinition:
    """Multiprocess with the settings' workers, or in process when that is 1; ``workers`` can be
    given per run as run config. Celery or Kubernetes when the settings say so."""
    if settings.step_executor in ("celery", "k8s"):
        return _scaled_executor(settings)

    def configure(config: dict) -> dict:
        return executor_config(settings, config["workers"])

    return multi_or_in_process_executor.configured(
        configure,
        name="rt_executor",
        config_schema={"workers": Field(Int, is_required=False, default_value=settings.cpu_workers())},
    )


def executor_kind(settings: Settings, workers: int | None = None) -> str:
    """``in_process``, ``multiprocess``, ``celery`` or ``k8s``: what a run with ``workers`` step workers uses."""
    return next(iter(executor_config(settings, workers)))


__all__ = ["PRELOAD", "celery_config", "executor_config", "executor_kind", "step_executor"]
