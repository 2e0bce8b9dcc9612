import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables
from rt_assets.table_schemas import AGREEMENT, schema_metadata
from rt_resources.course_paths import AGREEMENT as AGREEMENT_FILE
from rt_resources.resources import DataRoot


def _per_organ(table: pd.DataFrame) -> dict:
    if not len(table):
        return {"per_organ": MetadataValue.md("no organ with both a manual and an automatic contour")}
    summary = (
        table.groupby("roi_std")
        .agg(courses=("course_key", "nunique"), dice=("dice", "median"), hd95_mm=("hd95_mm", "median"))
        .round(3)
        .sort_values("dice")
    )
    return {"per_organ": MetadataValue.md(summary.to_markdown())}


@asset(
    deps=["contour_agreement"],
    code_version="1",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_agreement")],
    metadata=schema_metadata(AGREEMENT),
)
def cohort_agreement(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Auto vs manual agreement of every course in one table (cohort/agreement.parquet: Dice,
    HD95, mean surface distance, volume ratio, Dmean and D2 differences per organ and course);
    the metadata gives the median per organ. Rebuilt by cohort_sensor."""
    return stack_course_tables(context, data_root, AGREEMENT_FILE, describe=_per_organ)
