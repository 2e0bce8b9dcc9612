"""Lineage metadata every materialization records: source UIDs, input digests, tool versions."""

import json
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


def settings_digest(resources: Mapping[str, object]) -> str:
    """sha256 over the output-changing part of each resource's configuration (parameter files by
    content, task, regions; not paths, workers or devices): equal digests, equal outputs."""
    from rt_resources.resources import output_config

    return digest_of(
        json.dumps({key: output_config(res) for key, res in sorted(resources.items())}, sort_keys=True, default=str)
    )


def asset_resources(context: AssetExecutionContext) -> dict[str, object]:
    """The resources this asset's step uses, by key."""
    keys = sorted(context.assets_def.required_resource_keys - {"io_manager"})
    return {key: getattr(context.resources, key) for key in keys}


def lineage_metadata(
    context: AssetExecutionContext,
    source_uids: Mapping[str, object],
    input_sha256: Mapping[str, str],
    extra_tools: Iterable[str] = (),
) -> dict[str, MetadataValue]:
    """Metadata that lets an auditor tie an output to its exact inputs, code and settings: the
    configuration of every resource the step used (``settings``; secrets are never part of it)
    and the digest of what in it changes outputs (``settings_sha256``, compared by ``rtpipeline
    run`` to decide what to recompute)."""
    from rt_resources.resources import effective_config

    code_version = context.assets_def.code_versions_by_key.get(context.asset_key) or "unversioned"
    resources = asset_resources(context)
    return {
        "source_uids": MetadataValue.json(dict(source_uids)),
        "input_sha256": MetadataValue.json(dict(input_sha256)),
        "tool_versions": MetadataValue.json(tool_versions(extra_tools)),
        "code_version": MetadataValue.text(code_version),
        "settings": MetadataValue.json({key: effective_config(res) for key, res in resources.items()}),
        "settings_sha256": MetadataValue.text(settings_digest(resources)),
    }


def record_skip(
    context: AssetExecutionContext, reason: str, settings_keys: Iterable[str] | None = None, **metadata: MetadataValue
) -> None:
    """Say why this partition of an optional-output asset is not materialized (an observation
    with ``skipped``, visible in the UI), instead of writing an output that would look done. The
    settings digest goes with it: a skip holds only as long as the settings that caused it (turn
    robustness on, add custom-structure rules, and ``rtpipeline run`` runs the asset).
    ``settings_keys``: the resources whose settings decided the skip (default: all the asset's),
    so that an unrelated change (other radiomics parameters while robustness is off) keeps it."""
    from dagster import AssetObservation

    from rt_assets.privacy import scrub

    reason = scrub(reason)
    resources = asset_resources(context)
    if settings_keys is not None:
        resources = {key: resources[key] for key in settings_keys if key in resources}
    context.log.warning(f"{context.asset_key.to_user_string()} {context.partition_key}: not materialized: {reason}")
    context.log_event(
        AssetObservation(
            asset_key=context.asset_key,
            partition=context.partition_key,
            metadata={
                "skipped": reason,
                "settings_sha256": MetadataValue.text(settings_digest(resources)),
                "settings_keys": MetadataValue.json(sorted(resources)),
                **metadata,
            },
        )
    )
