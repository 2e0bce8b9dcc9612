import pandas as pd
import pyarrow.parquet as pq
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.audit import LEDGER_COLUMNS, ledger_rows
from rt_assets.cohort_inputs import (
    COHORT_INPUTS,
    courses_in_flight,
    coverage_result,
    coverage_spec,
    input_ids,
    record_inputs,
)
from rt_assets.table_schemas import AUDIT, row_count, schema_metadata
from rt_resources.resources import DataRoot

LEDGER_DIR = "audit"  #: cohort/audit/ledger-<n>.parquet, n = 1, 2, ...


def ledger_parts(folder) -> list:
    return sorted(folder.glob("ledger-*.parquet"))


CHECK_LOW_WATER = b"rt_check_low_water"  #: parquet metadata of each part: every check id up to it is settled


def ledger_cursors(folder) -> tuple[int, int, frozenset[int]]:
    """Where the next part starts: the highest materialization storage id in the ledger, the check
    low water mark of the last part (executions above it may still be in flight), and the check
    executions above that mark already in the ledger."""
    parts = ledger_parts(folder)
    if not parts:
        return 0, 0, frozenset()
    frame = pd.read_parquet(folder, columns=["event", "event_id"])
    mats = frame.loc[frame["event"] == "materialization", "event_id"]
    materialization = int(mats.max()) if len(mats) else 0
    checks = frame.loc[frame["event"] == "check", "event_id"]
    meta = pq.read_schema(parts[-1]).metadata or {}
    # parts written before the low water mark existed: every check up to their highest id was settled
    low_water = int(meta[CHECK_LOW_WATER]) if CHECK_LOW_WATER in meta else int(checks.max() if len(checks) else 0)
    return materialization, low_water, frozenset(int(i) for i in checks[checks > low_water])


def _write_part(path, frame: pd.DataFrame, low_water: int):
    """Write one ledger part, atomically, with the check low water mark in its parquet metadata."""
    import pyarrow as pa

    from rt_resources.fileio import write_atomic

    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), CHECK_LOW_WATER: str(low_water).encode()})
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))


@asset(
    code_version="2",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_audit")],
    metadata=schema_metadata(AUDIT),
)
def cohort_audit(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """An append-only ledger of every materialization and every QC check result in this Dagster
    instance (cohort/audit/ledger-<n>.parquet): time, asset, course, run, code version, data
    version, the upstream materializations consumed (storage ids) and the recorded lineage
    (source UIDs, input sha256, tool versions, model, output sha256); for checks the name,
    verdict, severity and description. Each run adds one part with the events after the ledger's
    last ones; existing parts are never rewritten. A check planned by a run still in flight is
    added by a later build, once evaluated (or, if its run ended first, as "not evaluated").
    Read them all with pandas.read_parquet("cohort/audit")."""
    ids = input_ids(context.instance, COHORT_INPUTS["cohort_audit"])
    folder = data_root.cohort_dir() / LEDGER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    after_mat, after_check, in_ledger = ledger_cursors(folder)
    rows, low_water = ledger_rows(context.instance, after_mat, after_check, in_ledger)
    new_part = None
    if rows:
        frame = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
        frame["passed"] = frame["passed"].astype("boolean")
        new_part = _write_part(folder / f"ledger-{len(ledger_parts(folder)) + 1:06d}.parquet", frame, low_water)
    keys = pd.read_parquet(folder, columns=["course_key"])["course_key"] if ledger_parts(folder) else pd.Series([])
    covered, n_rows = set(keys), len(keys)
    expected = set().union(*(set(per) for per in ids.values()))
    return MaterializeResult(
        check_results=[coverage_result("cohort_audit", expected, covered, courses_in_flight(context.instance))],
        metadata={
            "inputs_sha256": record_inputs(data_root.cohort_dir(), "cohort_audit", ids),
            "path": MetadataValue.path(str(folder)),
            "new_rows": len(rows),
            **row_count(n_rows),
            "new_part": new_part.name if new_part else "none (no new events)",
            "n_parts": len(ledger_parts(folder)),
            "after": MetadataValue.json({"materialization": after_mat, "check": after_check}),
            "check_low_water": low_water,
        },
    )
