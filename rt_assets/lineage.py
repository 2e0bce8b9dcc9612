"""Lineage metadata every materialization records: source UIDs, input digests, tool versions."""

from collections.abc import Iterable, Mapping
from pathlib import Path

from dagster import AssetExecutionContext, DataVersion, MetadataValue

from rt_resources.provenance import digest_of, sha256_file, tool_versions


def content_version(*paths: Path | str, extra: str = "") -> DataVersion:
    """The data version of an output: sha256 over the bytes of its files (folders: every file,
    by relative path), so equal outputs have equal versions and an auditor can recompute it.
    Downstream materializations record it as their input data version."""
    parts = []
    for path in map(Path, paths):
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for f in files:
            if f.exists() and not f.name.startswith("."):
                parts.append(f"{f.relative_to(path) if path.is_dir() else f.name}:{sha256_file(f)}")
    return DataVersion(digest_of(parts + ([f"extra:{extra}"] if extra else []))[:32])


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
