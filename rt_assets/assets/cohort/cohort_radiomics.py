import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import COURSES_UPDATED
from rt_assets.lineage import lineage_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.provenance import sha256_file
from rt_resources.resources import DataRoot


@asset(deps=["radiomics"], code_version="1", kinds={"parquet"}, automation_condition=COURSES_UPDATED)
def cohort_radiomics(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every course's radiomics features in one table (cohort/radiomics.parquet), rebuilt
    automatically when any course's radiomics change."""
    paths = sorted((data_root.root / "courses").glob("c-*/radiomics.parquet"))
    frames = [pd.read_parquet(p) for p in paths]
    table = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["course_key", "roi_name"])
    path = write_parquet_atomic(data_root.cohort_dir() / "radiomics.parquet", table)
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
