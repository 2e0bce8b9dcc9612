import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables, with_standard_names
from rt_assets.table_schemas import COHORT_DVH_METRICS, schema_metadata
from rt_resources.course_paths import DVH_CURVES, DVH_EQD2
from rt_resources.dvh.course import order_dose_columns
from rt_resources.dvh.eqd2 import with_eqd2
from rt_resources.fileio import write_atomic
from rt_resources.resources import DataRoot, ScienceConfig


@asset(
    deps=["dvh", "dvh_eqd2"],
    code_version="3",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_dvh_metrics")],
    metadata=schema_metadata(COHORT_DVH_METRICS),
)
def cohort_dvh_metrics(
    context: AssetExecutionContext, data_root: DataRoot, science: ScienceConfig
) -> MaterializeResult:
    """Every course's DVH metrics in one table (cohort/dvh_metrics.parquet): each row with its
    TG-263 name (roi_std) beside roi_name, and the EQD2 metrics (*_eqd2_gy, alpha_beta_gy, or
    eqd2_reason when withheld) beside the physical ones. Rebuilt by cohort_sensor once no run is
    in flight and any course's DVH, or the name mapping, changed. Query by roi_std to pool a
    structure whatever each planner named it."""
    names = science.name_map()

    def transform(table: pd.DataFrame) -> pd.DataFrame:
        eqd2_files = sorted((data_root.root / "courses").glob(f"c-*/{DVH_EQD2}"))
        eqd2 = pd.concat([pd.read_parquet(p) for p in eqd2_files], ignore_index=True) if eqd2_files else None
        table = with_standard_names(order_dose_columns(table), names)
        return with_eqd2(table, eqd2)

    def describe(table: pd.DataFrame) -> dict:
        return {
            "eqd2_rows": int(table["mean_eqd2_gy"].notna().sum()) if "mean_eqd2_gy" in table else 0,
            "dvh_bands": MetadataValue.md(bands_markdown(data_root, table)),
        }

    return stack_course_tables(
        context, data_root, "dvh_metrics.parquet", transform, mapping_digest=names.digest, describe=describe
    )


def bands_markdown(data_root: DataRoot, metrics: pd.DataFrame, n: int = 8) -> str:
    """The cohort report's DVH bands (median and interquartile range per roi_std) of the ``n`` most
    frequent structures, as an image for the UI."""
    from rt_resources.qc.previews.render import png_markdown
    from rt_resources.report.bands import dvh_bands
    from rt_resources.report.figures import dvh_bands_png

    files = sorted((data_root.root / "courses").glob(f"c-*/{DVH_CURVES}"))
    curves = pd.concat([pd.read_parquet(p) for p in files], ignore_index=True) if files else None
    if curves is None or not len(curves) or not len(metrics):
        return "no DVH curves"
    bands, note = dvh_bands(curves, metrics)
    if not bands:
        return "no structure in at least two courses"
    path = data_root.cohort_dir() / "preview" / "dvh_bands.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: dvh_bands_png(bands[:n], tmp))
    return f"{len(bands)} structures in at least two courses ({note}); the {min(n, len(bands))} most frequent:\n\n" + (
        png_markdown(path, alt="DVH bands", max_width_px=900)
    )
