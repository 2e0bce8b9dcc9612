"""The Dagster side of the GPU leases (:mod:`rt_resources.gpu_leases`).

* :func:`ensure_gpu_pool`: the pool ``gpu`` gets as many slots as the machine has GPU slots
  (devices x segmentations per device), so Dagster starts that many GPU steps at once; it warns
  when dagster.yaml's run limit on ``rt/gpu`` runs would hold them back. ``rtpipeline run`` and
  the daemon's start call it.
* :func:`gpu_lease`: inside a GPU step, the lease of one device for the step's work, and
  :func:`lease_metadata` to record it in the materialization.

The steps read the GPU settings from the run's config (``resources.gpu``, as ``rtpipeline run``
submits them) or else from the code location's settings, the source of the ``gpu`` resource of
the definitions. The assets do not require that resource: a resource an asset requires enters its
settings digest, and which device ran a segmentation does not change its masks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dagster import MetadataValue

from rt_assets.constants import GPU_POOL, TAG_GPU
from rt_resources.gpu_leases import DeviceLease, GpuConfig

GPU_RESOURCE = "gpu"  #: the GpuConfig's key in the definitions' resources and in run config


def _value_matches(limit_value: Any, value: str) -> bool:
    """Whether a tag_concurrency_limits entry's ``value`` covers the tag value ``value``."""
    if limit_value is None or isinstance(limit_value, Mapping):  # any value, or a limit per value
        return True
    return str(limit_value) == value


def _run_queue_limits(instance: Any) -> tuple[Sequence[Mapping[str, Any]], int | None]:
    """(tag_concurrency_limits, max_concurrent_runs) of the instance's run queue."""
    limits: Sequence[Mapping[str, Any]] | None = None
    max_runs: int | None = None
    with contextlib.suppress(Exception):  # an instance without a queued run coordinator
        queue = instance.get_concurrency_config().run_queue_config
        if queue is not None:
            limits, max_runs = queue.tag_concurrency_limits, queue.max_concurrent_runs
    if limits is None:
        runs = (instance.get_settings("concurrency") or {}).get("runs") or {}
        limits, max_runs = runs.get("tag_concurrency_limits") or [], runs.get("max_concurrent_runs", max_runs)
    return list(limits or []), max_runs


def gpu_run_limit(instance: Any, key: str = TAG_GPU, value: str = "true") -> int | None:
    """The lowest run limit of dagster.yaml's ``tag_concurrency_limits`` on ``key=value``; None if none."""
    limits, _ = _run_queue_limits(instance)
    found = [int(e["limit"]) for e in limits if e.get("key") == key and _value_matches(e.get("value"), value)]
    return min(found) if found else None


def ensure_gpu_pool(instance: Any, slots: int) -> str | None:
    """Set the limit of the pool ``gpu`` of ``instance`` to ``slots`` (only when it differs), and
    return a warning when dagster.yaml lets fewer segmentation runs (tag ``rt/gpu=true``) run at
    once than there are slots (None when nothing holds them back)."""
    slots = int(slots)
    if slots < 1:
        raise ValueError(f"GPU slots must be 1 or more, got {slots}")
    storage = instance.event_log_storage
    info = storage.get_concurrency_info(GPU_POOL)
    if info.slot_count != slots or (info.limit is not None and info.limit != slots):
        storage.set_concurrency_slots(GPU_POOL, slots)
    where = "dagster.yaml"
    with contextlib.suppress(Exception):
        where = f"{instance.root_directory}/dagster.yaml"
    warnings = []
    run_limit = gpu_run_limit(instance)
    if run_limit is not None and run_limit < slots:
        warnings.append(
            f"the pool `{GPU_POOL}` has {slots} slots, but {where} lets only {run_limit} run(s) tagged "
            f"{TAG_GPU}=true run at once, so at most {run_limit} segmentation(s) run at a time: set the limit "
            f"of the entry `key: {TAG_GPU}` under concurrency.runs.tag_concurrency_limits to {slots} "
            "and restart the daemon"
        )
    _, max_runs = _run_queue_limits(instance)
    if max_runs is not None and 0 <= int(max_runs) < slots:
        warnings.append(
            f"concurrency.runs.max_concurrent_runs in {where} is {max_runs}, below the {slots} GPU slots: "
            f"raise it to {slots} or more (plus the CPU runs meant to go on beside them)"
        )
    return "; ".join(warnings) or None


def step_gpu_config(context: Any) -> GpuConfig:
    """The GPU settings of a step: the ``gpu`` resource when the step has it, else the run's config
    of that resource, else the code location's settings (whence the definitions' resource)."""
    with contextlib.suppress(Exception):
        resource = getattr(context.resources, GPU_RESOURCE)
        if isinstance(resource, GpuConfig):
            return resource
    run_config = getattr(getattr(context, "run", None), "run_config", None) or {}
    config = ((run_config.get("resources") or {}).get(GPU_RESOURCE) or {}).get("config")
    if isinstance(config, Mapping):
        return GpuConfig(**config)
    from rt_assets.config import current_settings

    gpu = current_settings().gpu
    return GpuConfig(devices=list(gpu.devices), per_device=gpu.per_device)


@contextlib.contextmanager
def gpu_lease(context: Any, data_root: Any, kind: str) -> Iterator[DeviceLease]:
    """Hold one GPU slot of this machine for the block; ``kind`` is the engine's device setting
    (gpu | cpu: a CPU engine in the pool still takes its turn). Lock files in the state folder."""
    config = step_gpu_config(context)
    lease = config.lease(data_root.state(), on_wait=context.log.info)
    with lease:
        slots = lease.slots
        context.log.info(
            f"GPU lease: device {lease.device} slot {lease.slot} ({lease.describe(kind)}) of {slots.count} slot(s) "
            f"(devices {', '.join(slots.devices)}, {slots.per_device} each), after {lease.waited_s:.1f} s"
        )
        yield lease


def lease_metadata(lease: DeviceLease, kind: str) -> dict[str, Any]:
    """``device`` (``cuda:1`` or ``cpu``) and ``device_lease`` (device, slot, when held) of a step."""
    return {
        "device": lease.engine_device(kind),
        "device_lease": MetadataValue.json({**lease.record(), "ran_on": lease.describe(kind)}),
    }


@contextlib.contextmanager
def leased_gpu_step(context: Any, data_root: Any, backend: str, pool: str | None) -> Iterator[dict[str, Any]]:
    """The radiomics steps' lease: outside the GPU pool nothing; in it (fastrad on CUDA) one device
    for the block, torch and the worker processes spawned in it pinned to that device
    (:meth:`DeviceLease.pinned`). Yields a dict that holds :func:`lease_metadata` once the block ends."""
    metadata: dict[str, Any] = {}
    if not pool:
        yield metadata
        return
    from rt_resources.radiomics.backends import resolve_backend

    kind = "gpu" if resolve_backend(backend)[1].startswith("cuda") else "cpu"
    with gpu_lease(context, data_root, kind) as lease:
        with lease.pinned() if kind == "gpu" else contextlib.nullcontext():
            yield metadata
    metadata.update(lease_metadata(lease, kind))
