from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.automation import COURSES_UPDATED
from rt_assets.cohort_tables import stack_course_tables
from rt_resources.dvh.course import order_dose_columns
from rt_resources.resources import DataRoot


@asset(deps=["dvh"], code_version="1", kinds={"parquet"}, automation_condition=COURSES_UPDATED)
def cohort_dvh_metrics(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every course's DVH metrics in one table (cohort/dvh_metrics.parquet), rebuilt
    automatically when any course's DVH changes (declarative automation)."""
    return stack_course_tables(context, data_root, "dvh_metrics.parquet", order_dose_columns)
