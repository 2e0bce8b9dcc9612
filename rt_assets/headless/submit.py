"""Submit runs to the instance's run queue, as the UI does.

The CLI loads the code location in its own process (with the settings of its command line),
builds each run from the job's snapshot and execution plan, and hands it to the instance's run
coordinator: with dagster.yaml's ``concurrency.runs`` that is the QueuedRunCoordinator, so the run
is QUEUED (a RUN_ENQUEUED event) and a daemon launches it, in priority order, within the run
limits. A run names the code location ``rtpipeline`` and the module ``rt_assets.definitions``, the
same as the workspace.yaml that ``dagster dev`` loads, so either daemon can launch it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from contextlib import AbstractContextManager
from typing import Any

from dagster import AssetKey

from rt_assets.constants import CODE_LOCATION


class Submitter(AbstractContextManager):
    """The code location, loaded in process, and a way to put runs of its jobs on the queue."""

    def __init__(self, instance) -> None:
        from dagster._core.remote_origin import InProcessCodeLocationOrigin
        from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget

        self.instance = instance
        origin = InProcessCodeLocationOrigin(
            LoadableTargetOrigin(executable_path=sys.executable, module_name="rt_assets.definitions", attribute="defs"),
            location_name=CODE_LOCATION,
        )
        self._process_context = WorkspaceProcessContext(instance, InProcessWorkspaceLoadTarget(origin))
        self._context = self._process_context.create_request_context()
        errors = self._context.get_code_location_error(CODE_LOCATION)
        if errors:
            self.close()
            raise RuntimeError(f"the code location rt_assets.definitions does not load: {errors.to_string()}")
        self.location = self._context.get_code_location(CODE_LOCATION)
        self.repository = next(iter(self.location.get_repositories().values()))

    def close(self) -> None:
        self._process_context.__exit__(None, None, None)

    def __exit__(self, *exc) -> None:
        self.close()

    def submit(
        self,
        job_name: str,
        tags: Mapping[str, str],
        run_config: Mapping[str, Any],
        partition_key: str | None = None,
        assets: Iterable[str] | None = None,
    ) -> str:
        """Queue one run of ``job_name`` (for ``partition_key``; only ``assets`` of it when given,
        with their checks); returns its run id."""
        from dagster._core.definitions.selector import JobSubsetSelector

        asset_keys = sorted(AssetKey(a) for a in assets) if assets else None
        selector = JobSubsetSelector(
            location_name=CODE_LOCATION,
            repository_name=self.repository.name,
            job_name=job_name,
            op_selection=None,
            asset_selection=asset_keys,
        )
        job = self.location.get_job(selector)
        run_tags = {**job.tags, **tags}
        if partition_key is not None:
            run_tags["dagster/partition"] = partition_key
        plan = self.location.get_execution_plan(
            job, dict(run_config), step_keys_to_execute=None, known_state=None, instance=self.instance
        )
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=dict(run_config),
            resolved_op_selection=None,
            step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags=run_tags,
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=frozenset(asset_keys) if asset_keys else None,
            asset_check_selection=None,
            asset_graph=self.repository.asset_graph,
        )
        return self.instance.submit_run(run.run_id, self._context).run_id
