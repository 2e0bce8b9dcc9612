import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.audit import LEDGER_COLUMNS, ledger_rows
from rt_resources.fileio import write_parquet_atomic
from rt_resources.resources import DataRoot

LEDGER_DIR = "audit"  #: cohort/audit/ledger-<n>.parquet, n = 1, 2, ...


def ledger_parts(folder) -> list:
    return sorted(folder.glob("ledger-*.parquet"))


def ledger_cursors(folder) -> tuple[int, int]:
    """The highest materialization storage id and check execution id already in the ledger."""
    parts = ledger_parts(folder)
    if not parts:
        return 0, 0
    ids = pd.read_parquet(folder, columns=["event", "event_id"]).groupby("event")["event_id"].max()
    return int(ids.get("materialization", 0)), int(ids.get("check", 0))


@asset(code_version="1", kinds={"parquet"})
def cohort_audit(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """An append-only ledger of every materialization and every QC check result in this Dagster
    instance (cohort/audit/ledger-<n>.parquet): time, asset, course, run, code version, data
    version, the upstream materializations consumed (storage ids) and the recorded lineage
    (source UIDs, input sha256, tool versions, model, output sha256); for checks the name,
    verdict, severity and description. Each run adds one part with the events after the ledger's
    last ones; existing parts are never rewritten. Read them all with pandas.read_parquet(
    "cohort/audit")."""
    folder = data_root.cohort_dir() / LEDGER_DIR
    folder.mkdir(parents=True, exist_ok=True)
    after_mat, after_check = ledger_cursors(folder)
    rows = ledger_rows(context.instance, after_mat, after_check)
    new_part = None
    if rows:
        frame = pd.DataFrame(rows, columns=LEDGER_COLUMNS)
        frame["passed"] = frame["passed"].astype("boolean")
        new_part = write_parquet_atomic(folder / f"ledger-{len(ledger_parts(folder)) + 1:06d}.parquet", frame)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(folder)),
            "new_rows": len(rows),
            "new_part": new_part.name if new_part else "none (no new events)",
            "n_parts": len(ledger_parts(folder)),
            "after": MetadataValue.json({"materialization": after_mat, "check": after_check}),
        }
    )
