from dagster import AssetExecutionContext, MaterializeResult, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables
from rt_assets.table_schemas import ROBUSTNESS, schema_metadata
from rt_resources.course_paths import RADIOMICS_PERTURBATIONS
from rt_resources.resources import DataRoot, RobustnessConfig


@asset(
    deps=["radiomics_robustness"],
    code_version="1",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_radiomics_robustness")],
    metadata=schema_metadata(ROBUSTNESS),
)
def cohort_radiomics_robustness(
    context: AssetExecutionContext, data_root: DataRoot, robustness_config: RobustnessConfig
) -> MaterializeResult:
    """Feature robustness over the whole cohort (cohort/radiomics_robustness.parquet): every
    course's features per perturbation (radiomics_perturbations.parquet) pooled, then one ICC(1,1)
    per feature with each (course, ROI) a subject, as in each course's own table."""
    import pandas as pd

    from rt_resources.radiomics.robustness import ICC_COLUMNS, feature_icc

    def icc(long: pd.DataFrame) -> pd.DataFrame:
        return feature_icc(long, robustness_config.threshold) if len(long) else pd.DataFrame(columns=ICC_COLUMNS)

    def describe(table: pd.DataFrame) -> dict:
        return {"n_robust": int(table["robust"].sum()) if len(table) else 0, "threshold": robustness_config.threshold}

    return stack_course_tables(
        context,
        data_root,
        RADIOMICS_PERTURBATIONS,
        transform=icc,
        out_name="radiomics_robustness.parquet",
        extra_tools=("pingouin",),
        describe=describe,
    )
