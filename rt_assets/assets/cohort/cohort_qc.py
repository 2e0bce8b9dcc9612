import json
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables
from rt_assets.qc import CHECKS, QC_FILE
from rt_assets.table_schemas import QC, schema_metadata
from rt_resources.resources import DataRoot

QC_COLUMNS = ["course_key", "asset", "check", "passed", "severity", "description", "metadata"]


def qc_rows(path: Path) -> pd.DataFrame:
    """One row per check of one course's qc.json (metadata as a JSON string)."""
    doc = json.loads(Path(path).read_text())
    rows = [
        {
            "course_key": doc.get("course_key", Path(path).parent.name),
            "asset": r["asset"],
            "check": r["name"],
            "passed": bool(r["passed"]),
            "severity": r["severity"],
            "description": r["description"],
            "metadata": json.dumps(r.get("metadata", {}), sort_keys=True),
        }
        for r in doc.get("results", [])
    ]
    return pd.DataFrame(rows, columns=QC_COLUMNS)


@asset(
    deps=sorted(CHECKS),
    code_version="2",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_qc")],
    metadata=schema_metadata(QC),
)
def cohort_qc(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every course's quality checks in one table (cohort/qc.parquet: course_key, asset, check,
    passed, severity, description, metadata), one row per course x check, from each course's
    qc.json. Filter on passed == False and severity == "ERROR" for the courses to hold back."""
    return stack_course_tables(context, data_root, QC_FILE, reader=qc_rows, out_name="qc.parquet")
