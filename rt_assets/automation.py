"""Declarative automation conditions shared by the asset modules.

Dagster's ``since_last_handled()`` forgets a dependency's update as soon as the asset itself is
materialized again, even by a run whose step started before that update: a course run's radiomics
that finishes after the course's automatic organs were written would then leave them out of the
table for good (measured: the daemon path with custom-structure rules lost the organs' radiomics
once in three runs). :class:`SawLatestUpdates` closes that gap: a new materialization counts as
handling the update only when its step saw the dependency's latest materialization, which Dagster
records on every materialization (the ``dagster/input_event_pointer/<dep>`` tags: the storage id
of each dependency's latest materialization when the step started).
"""

from __future__ import annotations

from collections.abc import Iterable

from dagster import (
    AssetKey,
    AssetRecordsFilter,
    AssetSelection,
    AutomationCondition,
    AutomationContext,
    AutomationResult,
)
from dagster._core.definitions.data_version import NULL_EVENT_POINTER, get_input_event_pointer_tag


class SawLatestUpdates(AutomationCondition):
    """True for the partitions whose latest materialization was computed from the latest
    materialization of each of ``deps`` (all the asset's dependencies when empty).

    Evaluated only on its candidates (``newly_updated() & SawLatestUpdates(...)``: the partitions
    materialized since the last tick), two record lookups per dependency and partition, so a tick
    costs what changed, not the size of the archive. A materialization without provenance tags
    (written before they existed) counts as fresh, which is Dagster's own behaviour."""

    def __init__(self, deps: Iterable[str] = ()) -> None:
        self.deps = tuple(deps)

    @property
    def name(self) -> str:
        return "saw_latest_updates"

    @property
    def description(self) -> str:
        return f"computed from the latest {', '.join(self.deps) or 'dependencies'}"

    def evaluate(self, context: AutomationContext) -> AutomationResult:
        candidates = context.candidate_subset
        if candidates.is_empty:
            return AutomationResult(context=context, true_subset=candidates)
        instance = context.asset_graph_view.instance
        deps = [AssetKey.from_user_string(d) for d in self.deps] or sorted(
            context.asset_graph.get(context.key).parent_keys
        )
        keys = candidates.expensively_compute_partition_keys() if candidates.is_partitioned else {None}
        fresh = {pk for pk in keys if _saw_latest(instance, context.key, deps, pk)}
        if not candidates.is_partitioned:
            return AutomationResult(context=context, true_subset=candidates if fresh else context.get_empty_subset())
        return AutomationResult(context=context, true_subset=candidates.compute_intersection_with_partition_keys(fresh))


def _latest(instance, key: AssetKey, partition: str | None):
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None), limit=1
    ).records
    return records[0] if records else None


def _saw_latest(instance, key: AssetKey, deps: list[AssetKey], partition: str | None) -> bool:
    """Whether ``key``'s latest materialization (of ``partition``) saw each dep's latest one."""
    own = _latest(instance, key, partition)
    if own is None or own.asset_materialization is None:
        return True
    tags = own.asset_materialization.tags or {}
    for dep in deps:
        pointer = tags.get(get_input_event_pointer_tag(dep))
        if pointer is None:  # no provenance recorded
            continue
        pointer_id = -1 if pointer == NULL_EVENT_POINTER else int(pointer)  # NULL: the dep did not exist then
        latest = _latest(instance, dep, partition)
        # the pointer is the dep's latest record over all partitions when the step started: a
        # partition's record with a smaller storage id existed then, one with a larger did not
        if latest is not None and latest.storage_id > pointer_id:
            return False
    return True


def after_updates(required: list[str], triggers: list[str] | None = None) -> AutomationCondition:
    """Run when a dependency was updated since this asset was last handled, once the
    ``required`` dependencies exist and nothing upstream is in progress. ``triggers``
    limits which dependencies' updates count (default: all). Unlike ``eager()``, an
    optional dependency that is missing (no segmentation weights, no dose) does not block.

    "Handled" is Dagster's (requested, or materialized), except that a materialization whose step
    started before the triggering update does not handle it (:class:`SawLatestUpdates`)."""
    updated = AutomationCondition.any_deps_updated()
    if triggers is not None:
        updated = updated.allow(AssetSelection.assets(*triggers))
    handled = (
        AutomationCondition.newly_requested()
        | (AutomationCondition.newly_updated() & SawLatestUpdates(triggers or ()))
        | AutomationCondition.initial_evaluation()
    ).with_label("handled")
    condition = updated.since(handled) & ~AutomationCondition.any_deps_in_progress()
    condition = condition & ~AutomationCondition.in_progress()
    if required:
        missing = AutomationCondition.any_deps_match(AutomationCondition.missing()).allow(
            AssetSelection.assets(*required)
        )
        condition = condition & ~missing
    return condition.with_label(f"after updates of {', '.join(triggers or ['any dependency'])}")
