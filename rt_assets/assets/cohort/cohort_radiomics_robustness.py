from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.cohort_inputs import (
    COHORT_INPUTS,
    courses_in_flight,
    coverage_result,
    coverage_spec,
    input_ids,
    record_inputs,
)
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.table_schemas import ROBUSTNESS, row_count, schema_metadata
from rt_resources.course_paths import RADIOMICS_PERTURBATIONS
from rt_resources.fileio import write_parquet_atomic
from rt_resources.provenance import sha256_file
from rt_resources.radiomics.robustness import ICC_COLUMNS, feature_icc
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

    name = "cohort_radiomics_robustness"
    ids = input_ids(context.instance, COHORT_INPUTS[name])  # before reading: see rt_assets.cohort_inputs
    paths = sorted((data_root.root / "courses").glob(f"c-*/{RADIOMICS_PERTURBATIONS}"))
    long = pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True) if paths else pd.DataFrame()
    icc = feature_icc(long, robustness_config.threshold) if len(long) else pd.DataFrame(columns=ICC_COLUMNS)
    path = write_parquet_atomic(data_root.cohort_dir() / "radiomics_robustness.parquet", icc)
    expected = set().union(*(set(per) for per in ids.values())) if ids else set()
    present = set(long["course_key"]) if len(long) else set()
    return MaterializeResult(
        data_version=content_version(path),
        check_results=[coverage_result(name, expected, present, courses_in_flight(context.instance))],
        metadata={
            "path": MetadataValue.path(str(path)),
            **row_count(len(icc)),
            "n_courses": len(present),
            "n_subjects": int(long.groupby(["course_key", "roi_name", "source"]).ngroups) if len(long) else 0,
            "n_robust": int(icc["robust"].sum()) if len(icc) else 0,
            "threshold": robustness_config.threshold,
            "inputs_sha256": record_inputs(data_root.cohort_dir(), name, ids),
            **lineage_metadata(
                context,
                source_uids={"course_keys": sorted(present)},
                input_sha256={p.parent.name: sha256_file(p) for p in paths},
                extra_tools=("pingouin",),
            ),
        },
    )
