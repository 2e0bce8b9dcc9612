"""Lineage metadata every materialization records: source UIDs, input digests, tool versions."""

from collections.abc import Iterable, Mapping

from dagster import AssetExecutionContext, MetadataValue

from rt_resources.provenance import tool_versions


def lineage_metadata(
    context: AssetExecutionContext,
    source_uids: Mapping[str, object],
    input_sha256: Mapping[str, str],
    extra_tools: Iterable[str] = (),
) -> dict[str, MetadataValue]:
    """Metadata that lets an auditor tie an output to its exact inputs and code."""
    code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or "unversioned"
    return {
        "source_uids": MetadataValue.json(dict(source_uids)),
        "input_sha256": MetadataValue.json(dict(input_sha256)),
        "tool_versions": MetadataValue.json(tool_versions(extra_tools)),
        "code_version": MetadataValue.text(code_version),
    }


def record_skip(context: AssetExecutionContext, reason: str, **metadata: MetadataValue) -> None:
    """Say why this partition of an optional-output asset is not materialized (an observation
    with ``skipped``, visible in the UI), instead of writing an output that would look done."""
    from dagster import AssetObservation

    context.log.warning(f"{context.asset_key.to_user_string()} {context.partition_key}: not materialized: {reason}")
    context.log_event(
        AssetObservation(
            asset_key=context.asset_key,
            partition=context.partition_key,
            metadata={"skipped": reason, **metadata},
        )
    )
