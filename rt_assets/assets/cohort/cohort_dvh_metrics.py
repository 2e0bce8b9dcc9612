from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables
from rt_assets.table_schemas import DVH_METRICS, schema_metadata
from rt_resources.dvh.course import order_dose_columns
from rt_resources.resources import DataRoot


@asset(
    deps=["dvh"],
    code_version="2",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_dvh_metrics")],
    metadata=schema_metadata(DVH_METRICS),
)
def cohort_dvh_metrics(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every course's DVH metrics in one table (cohort/dvh_metrics.parquet), rebuilt
    by cohort_sensor once no run is in flight and any course's DVH changed."""
    return stack_course_tables(context, data_root, "dvh_metrics.parquet", order_dose_columns)
