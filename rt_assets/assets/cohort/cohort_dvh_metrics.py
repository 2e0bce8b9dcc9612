import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import COURSES_UPDATED
from rt_assets.lineage import lineage_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.provenance import sha256_file
from rt_resources.resources import DataRoot


@asset(deps=["dvh"], code_version="1", kinds={"parquet"}, automation_condition=COURSES_UPDATED)
def cohort_dvh_metrics(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every course's DVH metrics in one table (cohort/dvh_metrics.parquet), rebuilt
    automatically when any course's DVH changes (declarative automation)."""
    paths = sorted((data_root.root / "courses").glob("c-*/dvh_metrics.parquet"))
    frames = [pd.read_parquet(p) for p in paths]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["course_key", "roi_name"])
    vcols = sorted((c for c in table.columns if c.startswith("v") and c[1:-6].isdigit() and c.endswith("gy_pct")),
                   key=lambda c: int(c[1:-6]))  # fmt: skip
    table = table[[c for c in table.columns if c not in vcols] + vcols]
    path = write_parquet_atomic(data_root.cohort_dir() / "dvh_metrics.parquet", table)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "n_rows": len(table),
            "n_courses": int(table["course_key"].nunique()) if len(table) else 0,
            **lineage_metadata(
                context,
                source_uids={"course_keys": sorted(p.parent.name for p in paths)},
                input_sha256={p.parent.name: sha256_file(p) for p in paths},
            ),
        }
    )
