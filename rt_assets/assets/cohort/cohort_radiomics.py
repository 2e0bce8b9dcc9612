from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables, with_standard_names
from rt_assets.table_schemas import RADIOMICS, schema_metadata
from rt_resources.resources import DataRoot, ScienceConfig


@asset(
    deps=["radiomics"],
    code_version="3",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_radiomics")],
    metadata=schema_metadata(RADIOMICS),
)
def cohort_radiomics(context: AssetExecutionContext, data_root: DataRoot, science: ScienceConfig) -> MaterializeResult:
    """Every course's radiomics features in one table (cohort/radiomics.parquet), each row with
    its TG-263 name (roi_std) beside roi_name; rebuilt by cohort_sensor once no run is in flight
    and any course's radiomics, or the name mapping, changed."""
    names = science.name_map()
    return stack_course_tables(
        context,
        data_root,
        "radiomics.parquet",
        lambda table: with_standard_names(table, names),
        mapping_digest=names.digest,
    )
