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
