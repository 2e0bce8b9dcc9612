"""Cohort tables: one course file of every course, stacked into one parquet under cohort/."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue

from rt_assets.cohort_inputs import (
    COHORT_INPUTS,
    courses_in_flight,
    coverage_result,
    input_ids,
    record_inputs,
    with_mapping,
)
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.table_schemas import row_count
from rt_resources.fileio import write_parquet_atomic
from rt_resources.provenance import sha256_file
from rt_resources.resources import DataRoot


def stack_course_tables(
    context: AssetExecutionContext,
    data_root: DataRoot,
    file_name: str,
    transform: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
    reader: Callable[[Path], pd.DataFrame] = pd.read_parquet,
    out_name: str | None = None,
    extra_tools: tuple[str, ...] = (),
    describe: Callable[[pd.DataFrame], dict] | None = None,
    mapping_digest: str = "",
) -> MaterializeResult:
    """Concatenate ``courses/c-*/<file_name>`` (read with ``reader``) into ``cohort/<out_name>``
    (default: the same name), with lineage metadata, the versions of the course assets it was built
    from (``inputs_sha256``; see :mod:`rt_assets.cohort_inputs`) and its coverage check. Coverage
    counts the courses whose table was stacked (an empty one too: a course without PET has no SUV
    rows), before ``transform`` (which may aggregate them away);
    ``describe(table)`` adds metadata about the written table; ``mapping_digest``: the version of
    the name mapping ``transform`` applies (a table that maps names)."""
    asset = context.asset_key.to_user_string()
    ids = input_ids(context.instance, COHORT_INPUTS[asset])  # before reading: see rt_assets.cohort_inputs

    paths = sorted((data_root.root / "courses").glob(f"c-*/{file_name}"))
    frames = [reader(p) for p in paths]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["course_key", "roi_name"])
    # a course whose table was read is covered, also when it has no rows (a course without PET)
    present = {p.parent.name for p in paths}
    if transform is not None:
        table = transform(table)
    path = write_parquet_atomic(data_root.cohort_dir() / (out_name or file_name), table)
    digest = record_inputs(data_root.cohort_dir(), asset, with_mapping(asset, ids, mapping_digest))
    expected = set().union(*(set(per) for per in ids.values())) if ids else set()
    return MaterializeResult(
        data_version=content_version(path),
        check_results=[coverage_result(asset, expected, present, courses_in_flight(context.instance))],
        metadata={
            "path": MetadataValue.path(str(path)),
            **row_count(len(table)),
            "n_courses": len(present),
            "inputs_sha256": digest,
            **(describe(table) if describe is not None else {}),
            **lineage_metadata(
                context,
                source_uids={"course_keys": sorted(p.parent.name for p in paths)},
                input_sha256={p.parent.name: sha256_file(p) for p in paths},
                extra_tools=extra_tools,
            ),
        },
    )


def with_standard_names(table: pd.DataFrame, names) -> pd.DataFrame:
    """``table`` with ``roi_std`` and ``roi_std_rule`` (the TG-263 name of each row's ``roi_name``
    for its ``source``, :class:`rt_resources.naming.tg263.NameMap`) right after ``source``."""
    if not len(table) or "roi_name" not in table.columns:
        return table.assign(roi_std=pd.Series(dtype=object), roi_std_rule=pd.Series(dtype=object))
    named = names.frame(table.drop(columns=["roi_std", "roi_std_rule"], errors="ignore"))
    columns = [c for c in table.columns if c not in ("roi_std", "roi_std_rule")]
    at = columns.index("source") + 1 if "source" in columns else columns.index("roi_name") + 1
    return named[columns[:at] + ["roi_std", "roi_std_rule"] + columns[at:]]
