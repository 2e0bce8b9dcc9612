"""The step executor from the settings: multiprocess/in process, Celery (with the watch on its
workers) and Kubernetes; GPU steps tagged for the gpu queue."""

from __future__ import annotations

from types import SimpleNamespace

from rt_assets.celery_executor import WatchedCeleryExecutor, WorkerLost, WorkerWatch
from rt_assets.constants import GPU_STEP_TAGS
from rt_assets.definitions import build_definitions
from rt_assets.executors import celery_config, executor_kind
from rt_resources.settings import load_settings


def _settings(**overrides):
    return load_settings(environ={}, overrides=overrides)


def test_celery_and_k8s_executors_accept_the_cli_run_config():
    for choice in ("celery", "k8s"):
        settings = _settings(step_executor=choice, celery={"broker": "redis://10.1.2.3:6379/0"})
        defs = build_definitions(settings)
        job = defs.resolve_job_def("course_job")
        assert job.executor_def.name == "rt_executor"
        # rtpipeline run gives every run execution: {config: {workers: N}}; Celery/k8s ignore it
        assert job.executor_def.config_schema.config_type.fields["workers"]
        assert executor_kind(settings) == choice


def test_celery_config_routes_everything_else_to_the_cpu_queue():
    config = celery_config(_settings(celery={"broker": "redis://h:1/0", "cpu_queue": "cpu-big"}))
    assert config["broker"] == config["backend"] == "redis://h:1/0"
    assert config["config_source"]["task_default_queue"] == "cpu-big"
    assert config["config_source"]["task_track_started"] is True  # the watch needs the worker's name
    assert GPU_STEP_TAGS["dagster-celery/queue"] == "gpu"


class _Result:
    def __init__(self, task_id, state, host):
        self.id, self.state, self.info = task_id, state, {"hostname": host, "pid": 1}

    def ready(self):
        return False


class _App:
    def __init__(self, alive, active):
        self.alive, self.active, self.failed = alive, active, []
        self.control = SimpleNamespace(
            ping=lambda destination, timeout: [{h: {"ok": "pong"}} for h in self.alive],
            inspect=lambda hosts, timeout: SimpleNamespace(
                active=lambda: {h: [{"id": t} for t in self.active.get(h, [])] for h in hosts if h in self.alive}
            ),
        )
        self.backend = SimpleNamespace(mark_as_failure=lambda task_id, exc: self.failed.append((task_id, exc)))


def test_the_watch_fails_a_step_whose_worker_stopped_answering():
    app = _App(alive={"cpu@a"}, active={"cpu@a": ["t1"]})
    watch = WorkerWatch(app, interval_s=0.01, misses=2, ping_timeout_s=0.01)
    watch.add("dvh", _Result("t1", "STARTED", "cpu@a"))
    watch.add("totalseg_masks", _Result("t2", "STARTED", "gpu@b"))
    watch.add("radiomics", _Result("t3", "PENDING", "cpu@a"))  # queued: nobody to ask yet
    assert watch.check() == []  # one miss is not enough
    assert watch.check() == ["totalseg_masks"]
    (task_id, exc) = app.failed[0]
    assert task_id == "t2" and isinstance(exc, WorkerLost)
    assert "gpu@b" in str(exc) and "totalseg_masks" in str(exc)


def test_misses_are_counted_per_worker_not_per_step():
    app = _App(alive=set(), active={})
    watch = WorkerWatch(app, interval_s=0.01, misses=2, ping_timeout_s=0.01)
    watch.add("dvh", _Result("t1", "STARTED", "cpu@a"))
    watch.add("radiomics", _Result("t2", "STARTED", "cpu@a"))  # two steps on one worker: still one miss
    assert watch.check() == []
    assert watch.check() == ["dvh", "radiomics"]


def test_a_worker_restarted_under_the_same_name_has_lost_its_step():
    app = _App(alive={"gpu0@b"}, active={"gpu0@b": []})  # answers pings, runs nothing
    watch = WorkerWatch(app, interval_s=0.01, misses=2, ping_timeout_s=0.01)
    watch.add("totalseg_masks", _Result("t9", "STARTED", "gpu0@b"))
    assert watch.check() == ["totalseg_masks"]
    assert "no longer runs" in str(app.failed[0][1])


def test_the_watched_executor_is_dagster_celerys():
    assert issubclass(WatchedCeleryExecutor, __import__("dagster_celery").executor.CeleryExecutor)
