"""Lineage ledger: where a number came from, from Dagster's own event log.

Every materialization already records ``source_uids``, ``input_sha256``, ``tool_versions`` and
``code_version`` (:mod:`rt_assets.lineage`), and Dagster tags it with its data version and the
data versions of its inputs; every QC verdict is an asset check evaluation in the same run.
This module reads those records back:

* :func:`ledger_rows` turns the event log (materializations and check executions after given
  ids) into flat rows, for the append-only ``cohort/audit/`` parquet ledger;
* :func:`course_chain` and :func:`metric_chain` assemble, for one course (and one number),
  the chain back to the source files (paths and sha256 from the manifest), model weights and
  code versions, and :func:`format_chain` prints it.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dagster import AssetKey, DagsterEventType, DagsterInstance

from rt_resources.course_paths import CoursePaths

#: the course assets in lineage order (upstream first)
COURSE_CHAIN = (
    "course_manifest",
    "ct_image",
    "dose_grid",
    "structure_masks",
    "mr_images",
    "pet_images",
    "totalseg_input",
    "totalseg_inference",
    "totalseg_masks",
    "custom_structures",
    "ct_crop",
    "dvh",
    "pet_metrics",
    "radiomics",
    "course_preview",
)
#: what each number's table depends on (the assets whose records explain it)
METRIC_INPUTS = {
    "dvh": ("course_manifest", "ct_image", "dose_grid", "structure_masks"),
    "radiomics": ("course_manifest", "ct_image", "structure_masks", "mr_images", "pet_images"),
    "pet_metrics": ("course_manifest", "ct_image", "structure_masks", "pet_images"),
}
#: mask source -> the assets that made those masks (beyond the manual structure_masks), upstream first
SOURCE_ASSETS = {
    "manual": ("structure_masks",),
    "totalseg": ("totalseg_input", "totalseg_inference", "totalseg_masks"),
    "custom": ("custom_structures",),
}
LINEAGE_KEYS = (
    "source_uids",
    "input_sha256",
    "tool_versions",
    "code_version",
    "settings",
    "settings_sha256",
    "output_sha256",
    "model",
)
LEDGER_COLUMNS = [
    "event",
    "event_id",
    "timestamp",
    "asset",
    "course_key",
    "run_id",
    "check",
    "passed",
    "severity",
    "description",
    "code_version",
    "data_version",
    "inputs",
    "lineage",
]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _lineage(metadata: dict) -> dict:
    return {k: metadata[k].value for k in LINEAGE_KEYS if k in metadata}


def _input_pointers(tags: dict) -> dict[str, int]:
    """Upstream asset -> storage id of the materialization this step consumed (Dagster's
    input event pointer; unlike the input data version tag, exact within the same run too)."""
    prefix = "dagster/input_event_pointer/"
    return {k[len(prefix) :]: int(v) for k, v in tags.items() if k.startswith(prefix) and str(v).isdigit()}


def _resolve_inputs(instance: DagsterInstance, tags: dict, course_key: str) -> dict[str, dict]:
    """For each upstream asset: the consumed materialization (storage id, data version) and
    whether it is still the upstream's latest (False: this output is stale)."""
    from dagster import AssetRecordsFilter

    out = {}
    for upstream, pointer in sorted(_input_pointers(tags).items()):
        key = AssetKey.from_user_string(upstream)
        consumed = instance.fetch_materializations(AssetRecordsFilter(asset_key=key, storage_ids=[pointer]), limit=1)
        latest = _latest(instance, upstream, course_key)
        version = ""
        if consumed.records:
            version = (consumed.records[0].asset_materialization.tags or {}).get("dagster/data_version", "")
        out[upstream] = {
            "storage_id": pointer,
            "data_version": version,
            "is_latest": latest is not None and latest.storage_id == pointer,
        }
    return out


def _materializations_after(instance: DagsterInstance, after: int):
    """Every materialization with a storage id above ``after``, any asset (works on run-sharded
    SQLite storage too: asset events are indexed across runs)."""
    from dagster import AssetRecordsFilter

    for key in instance.get_asset_keys():
        cursor = None
        while True:
            page = instance.fetch_materializations(
                AssetRecordsFilter(asset_key=key, after_storage_id=after), limit=1000, cursor=cursor, ascending=True
            )
            yield from page.records
            if not page.has_more:
                break
            cursor = page.cursor


def _check_executions_after(instance: DagsterInstance, after: int):
    """Every QC check execution (all checks declared in :data:`rt_assets.qc.CHECKS`) with an
    execution id above ``after``, evaluated or not (planned by a run still going, or by one that
    ended without evaluating it)."""
    from dagster import AssetCheckKey

    from rt_assets.qc import CHECKS

    storage = instance.event_log_storage
    for asset, specs in CHECKS.items():
        for name, _, _ in specs:
            key, cursor = AssetCheckKey(AssetKey(asset), name), None
            while True:
                page = storage.get_asset_check_execution_history(key, limit=1000, cursor=cursor)
                fresh = [r for r in page if r.id > after]
                yield from fresh
                if len(page) < 1000 or len(fresh) < len(page):
                    break
                cursor = min(r.id for r in page)


def _evaluation(record):
    """The check's evaluation (an ``AssetCheckEvaluation``), or None for a planned-only execution
    or any event shape this code does not know."""
    event = getattr(record, "event", None)
    dagster_event = getattr(event, "dagster_event", None) if event is not None else None
    data = getattr(dagster_event, "event_specific_data", None) if dagster_event is not None else None
    return data if data is not None and hasattr(data, "passed") and hasattr(data, "metadata") else None


def _partition_of_run(instance: DagsterInstance, run_id: str) -> str:
    run = instance.get_run_by_id(run_id)
    return (run.tags.get("dagster/partition", "") if run else "") or ""


def check_rows(instance: DagsterInstance, after_check: int, skip_ids: frozenset[int] = frozenset()):
    """Ledger rows of the check executions above ``after_check`` that are settled, and the new low
    water mark: every execution at or below it is settled and in the ledger.

    Settled: evaluated (passed or failed), or planned by a run that has ended without evaluating
    it (a crashed or failed run: a row "not evaluated"). An execution planned by a run still in
    flight is left for a later build, and the mark stays below it, so its result is picked up
    then, whatever ids were written meanwhile. ``skip_ids``: executions already in the ledger."""
    rows: list[dict[str, Any]] = []
    pending: list[int] = []
    run_status: dict[str, Any] = {}
    highest = after_check
    for record in _check_executions_after(instance, after_check):
        highest = max(highest, record.id)
        if record.id in skip_ids:
            continue
        evaluation = _evaluation(record)
        entry = getattr(record, "event", None)
        base = {
            "event": "check",
            "event_id": record.id,
            "timestamp": _iso(entry.timestamp if entry is not None else record.create_timestamp),
            "asset": record.key.asset_key.to_user_string(),
            "course_key": record.partition or "",
            "run_id": record.run_id,
            "check": record.key.name,
            "code_version": "",
            "data_version": "",
            "inputs": "{}",
            "lineage": "{}",
        }
        if evaluation is not None:
            metadata = evaluation.metadata or {}
            course = metadata["course_key"].value if "course_key" in metadata else base["course_key"]
            rows.append(
                {
                    **base,
                    "course_key": course or _partition_of_run(instance, record.run_id),
                    "passed": bool(evaluation.passed),
                    "severity": evaluation.severity.value if evaluation.severity else "",
                    "description": evaluation.description or "",
                }
            )
            continue
        if record.run_id not in run_status:
            run = instance.get_run_by_id(record.run_id)
            run_status[record.run_id] = run.status.value if run else "deleted"
        status = run_status[record.run_id]
        if status in ("SUCCESS", "FAILURE", "CANCELED", "deleted"):
            rows.append(
                {
                    **base,
                    "course_key": base["course_key"] or _partition_of_run(instance, record.run_id),
                    "passed": None,
                    "severity": "",
                    "description": f"not evaluated: its run {record.run_id[:8]} ended ({status.lower()}) "
                    "before the check ran",
                }
            )
        else:
            pending.append(record.id)
    low_water = min(pending) - 1 if pending else highest
    return rows, low_water


def ledger_rows(
    instance: DagsterInstance,
    after_materialization: int = 0,
    after_check: int = 0,
    skip_check_ids: frozenset[int] = frozenset(),
) -> tuple[list[dict], int]:
    """One row per materialization (storage id above ``after_materialization``) and per settled
    asset check execution (see :func:`check_rows`), oldest first, and the check low water mark.
    ``event_id`` is the storage id of a materialization or the execution id of a check;
    ``lineage`` is a JSON string of the recorded ``source_uids``, ``input_sha256``,
    ``tool_versions``, ``code_version``, ``settings``, ``output_sha256`` and ``model``."""
    rows: list[dict[str, Any]] = []
    for record in _materializations_after(instance, after_materialization):
        mat = record.asset_materialization
        tags = mat.tags or {}
        rows.append(
            {
                "event": "materialization",
                "event_id": record.storage_id,
                "timestamp": _iso(record.timestamp),
                "asset": mat.asset_key.to_user_string(),
                "course_key": mat.partition or "",
                "run_id": record.run_id,
                "check": "",
                "passed": None,
                "severity": "",
                "description": "",
                "code_version": tags.get("dagster/code_version", ""),
                "data_version": tags.get("dagster/data_version", ""),
                "inputs": json.dumps(_input_pointers(tags), sort_keys=True),
                "lineage": json.dumps(_lineage(mat.metadata), sort_keys=True, default=str),
            }
        )
    checks, low_water = check_rows(instance, after_check, skip_check_ids)
    rows += checks
    return sorted(rows, key=lambda r: (r["timestamp"], r["event"], r["event_id"])), low_water


# --------------------------------------------------------------------------- the chain of one course


def _latest(instance: DagsterInstance, asset: str, course_key: str):
    from dagster import AssetRecordsFilter

    result = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[course_key]), limit=1
    )
    return result.records[0] if result.records else None


def _checks_of_run(instance: DagsterInstance, run_id: str, asset: str) -> list[dict]:
    """The checks of ``asset`` in a run: evaluated ones with their verdict, and those the run
    planned but has not evaluated (still running, or ended first) as "not evaluated"."""
    kinds = {DagsterEventType.ASSET_CHECK_EVALUATION, DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED}
    evaluated, planned = {}, []
    for entry in instance.all_logs(run_id, of_type=kinds):
        data = getattr(entry.dagster_event, "event_specific_data", None)
        key = getattr(data, "asset_key", None)
        if key is None or key.to_user_string() != asset:
            continue
        name = getattr(data, "check_name", "?")
        if hasattr(data, "passed"):
            evaluated[name] = {
                "check": name,
                "passed": bool(data.passed),
                "severity": data.severity.value if getattr(data, "severity", None) else "",
                "description": getattr(data, "description", "") or "",
            }
        else:
            planned.append(name)
    out = list(evaluated.values())
    for name in planned:
        if name not in evaluated:
            out.append({"check": name, "passed": None, "severity": "", "description": "not evaluated (yet)"})
    return out


def course_chain(instance: DagsterInstance, course_key: str, assets: tuple[str, ...] = COURSE_CHAIN) -> list[dict]:
    """For each asset of the course (upstream first) that was materialized: its latest
    materialization (run, time, code and data versions, input data versions, lineage metadata)
    and the checks evaluated in that step."""
    chain = []
    for asset in assets:
        record = _latest(instance, asset, course_key)
        if record is None:
            continue
        mat = record.asset_materialization
        tags = mat.tags or {}
        chain.append(
            {
                "asset": asset,
                "storage_id": record.storage_id,
                "run_id": record.run_id,
                "timestamp": _iso(record.timestamp),
                "code_version": tags.get("dagster/code_version", ""),
                "data_version": tags.get("dagster/data_version", ""),
                "inputs": _resolve_inputs(instance, tags, course_key),
                **_lineage(mat.metadata),
                "checks": _checks_of_run(instance, record.run_id, asset),
            }
        )
    return chain


def source_files(course_dir: Path) -> list[dict]:
    """The course's source files as the manifest lists them: kind, path, SOP instance UID, sha256."""
    from rt_resources.ingest.manifest import read_manifest

    return [
        {"kind": str(f.kind), "path": f.path, "sop_instance_uid": f.sop_instance_uid, "sha256": f.sha256}
        for f in read_manifest(course_dir).files
    ]


class AuditError(LookupError):
    """The number asked for is not in the course's tables."""


def metric_chain(instance: DagsterInstance, course_dir: Path, roi: str, metric: str, source: str | None = None):
    """The value of ``metric`` for ``roi`` (dvh_metrics.parquet, else radiomics.parquet) and the
    chain of records that produced it: the table's asset, the mask source's asset and their
    inputs, upstream first. Raises :class:`AuditError` naming what exists when it is not found."""
    import pandas as pd

    from rt_resources.provenance import sha256_file

    course_dir = Path(course_dir)
    paths = CoursePaths(Path(course_dir))
    for asset, path in (("dvh", paths.dvh_metrics), ("radiomics", paths.radiomics)):
        if not path.exists():
            continue
        table = pd.read_parquet(path)
        if metric not in table.columns:
            continue
        rows = table[table["roi_name"] == roi]
        if source is not None:
            rows = rows[rows["source"] == source]
        if rows.empty:
            known = sorted(set(zip(table["roi_name"], table["source"], strict=True)))
            raise AuditError(
                f"ROI {roi!r}{f' (source {source})' if source else ''} is not in {path}; "
                f"ROIs: {', '.join(f'{r} ({s})' for r, s in known[:40])}"
            )
        values = [
            {"roi_name": roi, "source": r["source"], "value": (None if pd.isna(r[metric]) else float(r[metric]))}
            for _, r in rows.iterrows()
        ]
        sources = sorted({v["source"] for v in values})
        upstream = list(METRIC_INPUTS[asset])
        for s in sources:
            for producer in SOURCE_ASSETS.get(s.split("/")[-1], (s,)):  # "mr1/manual" -> manual; a model: itself
                if producer not in upstream:
                    upstream.append(producer)
        chain = course_chain(instance, course_dir.name, tuple([*upstream, asset]))
        table_asset = next((c for c in chain if c["asset"] == asset), None)
        recorded = (table_asset or {}).get("output_sha256")
        current = sha256_file(path)
        return {
            "course_key": course_dir.name,
            "metric": metric,
            "table": str(path),
            "table_sha256": current,
            "table_matches_record": None if recorded is None else recorded == current,
            "values": values,
            "chain": chain,
            "source_files": source_files(course_dir),
        }
    raise AuditError(
        f"metric {metric!r} is in neither dvh_metrics.parquet nor radiomics.parquet of {course_dir} "
        "(DVH metrics: volume_cc, mean_gy, d95_gy, v20gy_pct, ...; radiomics: pyradiomics names such as "
        "original_shape_MeshVolume)"
    )


# --------------------------------------------------------------------------- printing


def _short(value: Any, n: int = 16) -> str:
    text = str(value)
    return text if len(text) <= n else text[:n] + "..."


def format_chain(chain: list[dict], files: list[dict], header: list[str]) -> str:
    """A readable tree: the header lines, each asset's record (newest last), then the source files."""
    lines = list(header)
    for link in reversed(chain):  # from the number back to the sources
        lines.append(
            f"<- {link['asset']} #{link['storage_id']}  code {link['code_version'] or '?'}  "
            f"data {_short(link['data_version'])}  run {link['run_id'][:8]}  {link['timestamp']}"
        )
        if link.get("inputs"):
            inputs = ", ".join(
                f"{k} #{v['storage_id']} data {_short(v['data_version'], 12)}" + ("" if v["is_latest"] else " (STALE)")
                for k, v in sorted(link["inputs"].items())
            )
            lines.append(f"     inputs: {inputs}")
        for key in ("source_uids", "input_sha256", "model"):
            if link.get(key):
                lines.append(f"     {key}: {json.dumps(link[key], sort_keys=True)}")
        if link.get("tool_versions"):
            tools = ", ".join(f"{k} {v}" for k, v in sorted(link["tool_versions"].items()))
            lines.append(f"     tools: {tools}")
        for resource, config in sorted((link.get("settings") or {}).items()):
            shown = {k: v for k, v in config.items() if v not in ("", [], None)}
            lines.append(f"     settings {resource}: {json.dumps(shown, sort_keys=True, default=str)}")
        for check in link.get("checks", []):
            if check["passed"] is None:
                verdict = "NOT EVALUATED"
            else:
                verdict = "PASS" if check["passed"] else f"FAIL ({check['severity']})"
            lines.append(f"     check {check['check']}: {verdict}  {check['description'][:140]}")
    lines.append(f"<- source files ({len(files)}):")
    by_kind: dict[str, list[dict]] = {}
    for f in files:
        by_kind.setdefault(f["kind"], []).append(f)
    for kind, group in sorted(by_kind.items()):
        if len(group) > 3:
            lines.append(f"     {kind}: {len(group)} files, e.g. {group[0]['path']} sha256 {group[0]['sha256']}")
        else:
            lines += [f"     {kind}: {f['path']}  sha256 {f['sha256']}" for f in group]
    return "\n".join(lines)
