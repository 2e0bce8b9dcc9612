from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.automation import COURSES_UPDATED
from rt_assets.cohort_tables import stack_course_tables
from rt_resources.resources import DataRoot


@asset(deps=["radiomics"], code_version="1", kinds={"parquet"}, automation_condition=COURSES_UPDATED)
def cohort_radiomics(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every course's radiomics features in one table (cohort/radiomics.parquet), rebuilt
    automatically when any course's radiomics change."""
    return stack_course_tables(context, data_root, "radiomics.parquet")
