from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables, with_standard_names
from rt_assets.table_schemas import PET_METRICS, schema_metadata
from rt_resources.course_paths import PET_METRICS as PET_METRICS_FILE
from rt_resources.resources import DataRoot, ScienceConfig


@asset(
    deps=["pet_metrics"],
    code_version="1",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_pet_metrics")],
    metadata=schema_metadata(PET_METRICS),
)
def cohort_pet_metrics(
    context: AssetExecutionContext, data_root: DataRoot, science: ScienceConfig
) -> MaterializeResult:
    """Every course's SUV metrics per ROI in one table (cohort/pet_metrics.parquet: SUVmax, SUVmean,
    SUVpeak, MTV, TLG, SUVlbm), each row with its TG-263 name (roi_std); rebuilt by cohort_sensor
    once no run is in flight and any course's pet_metrics, or the name mapping, changed."""
    names = science.name_map()
    return stack_course_tables(
        context,
        data_root,
        PET_METRICS_FILE,
        lambda table: with_standard_names(table, names),
        mapping_digest=names.digest,
    )
