"""The Celery app of this project's workers (``step_executor: celery``; README "Scale-out").

Start a worker with the same settings (environment or ``RT_SETTINGS``) as the code location::

    celery -A rt_assets.celery_app worker -Q cpu --pool threads --concurrency 1 --hostname cpu-1@%h
    CUDA_VISIBLE_DEVICES=0 celery -A rt_assets.celery_app worker -Q gpu --pool threads -c 1 -n gpu0@%h

``--pool threads`` is also this app's default (``worker_pool``): steps run in threads, so the
worker answers the run's pings while busy, and a step may start process pools of its own.

The app is dagster-celery's (its ``execute_plan`` task runs one step of a run against the
instance the run names, e.g. Postgres), configured from :class:`~rt_resources.settings.Settings`:
the broker and result backend of ``celery.*`` and the default queue ``celery.cpu_queue``. The
worker must see the data root (and the drop) where the settings say, and import this project.
"""

from __future__ import annotations

import multiprocessing

from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task

from rt_assets.config import current_settings
from rt_assets.executors import celery_config

_config = celery_config(current_settings())
app = make_app(
    {
        "broker": _config["broker"],
        "backend": _config["backend"],
        "include": [],
        "config_source": _config["config_source"],
    }
)
app.conf.update(_config["config_source"])
app.conf.worker_pool = "threads"
execute_plan = create_task(app)

# Steps run in threads of this worker (``--pool threads``). A child forked from a process with
# threads can inherit a lock another thread held and wait on it for ever (nnU-Net's default-context
# Pools in TotalSegmentator fork): child processes of this worker are spawned, never forked.
multiprocessing.set_start_method("spawn", force=True)
