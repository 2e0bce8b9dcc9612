"""Declarative automation conditions shared by the asset modules."""

from dagster import AssetSelection, AutomationCondition


def after_updates(required: list[str], triggers: list[str] | None = None) -> AutomationCondition:
    """Run when a dependency was updated since this asset was last handled, once the
    ``required`` dependencies exist and nothing upstream is in progress. ``triggers``
    limits which dependencies' updates count (default: all). Unlike ``eager()``, an
    optional dependency that is missing (no segmentation weights, no dose) does not block."""
    updated = AutomationCondition.any_deps_updated()
    if triggers is not None:
        updated = updated.allow(AssetSelection.assets(*triggers))
    condition = updated.since_last_handled() & ~AutomationCondition.any_deps_in_progress()
    condition = condition & ~AutomationCondition.in_progress()
    if required:
        missing = AutomationCondition.any_deps_match(AutomationCondition.missing()).allow(
            AssetSelection.assets(*required)
        )
        condition = condition & ~missing
    return condition.with_label(f"after updates of {', '.join(triggers or ['any dependency'])}")
