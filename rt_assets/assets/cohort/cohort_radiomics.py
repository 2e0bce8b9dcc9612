from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables
from rt_assets.table_schemas import RADIOMICS, schema_metadata
from rt_resources.resources import DataRoot


@asset(
    deps=["radiomics"],
    code_version="2",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_radiomics")],
    metadata=schema_metadata(RADIOMICS),
)
def cohort_radiomics(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every course's radiomics features in one table (cohort/radiomics.parquet), rebuilt
    by cohort_sensor once no run is in flight and any course's radiomics changed."""
    return stack_course_tables(context, data_root, "radiomics.parquet")
