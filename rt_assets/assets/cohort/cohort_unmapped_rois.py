import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.cohort_inputs import coverage_spec
from rt_assets.cohort_tables import stack_course_tables
from rt_assets.table_schemas import UNMAPPED_ROIS, schema_metadata
from rt_resources.naming.tg263 import unmapped_table
from rt_resources.resources import DataRoot, ScienceConfig

ID_COLUMNS = ["course_key", "roi_name", "source"]


def _names(path) -> pd.DataFrame:
    """The ROI names of one course table (no feature or dose column: only the names are needed)."""
    return pd.read_parquet(path, columns=ID_COLUMNS)


@asset(
    deps=["radiomics", "dvh"],
    code_version="1",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_unmapped_rois")],
    metadata=schema_metadata(UNMAPPED_ROIS),
)
def cohort_unmapped_rois(
    context: AssetExecutionContext, data_root: DataRoot, science: ScienceConfig
) -> MaterializeResult:
    """Structure names with no TG-263 name (cohort/unmapped_rois.parquet), most frequent first,
    with the candidates of an ambiguous name and why each is unmapped: what a site adds to its
    mapping file (settings science.roi_names). The metadata shows the mapping in use."""
    names = science.name_map()

    def read(path) -> pd.DataFrame:
        frames = [_names(path)]
        dvh = path.with_name("dvh_metrics.parquet")
        if dvh.exists():
            frames.append(_names(dvh))
        return pd.concat(frames, ignore_index=True)

    def transform(table: pd.DataFrame) -> pd.DataFrame:
        return unmapped_table(names.frame(table) if len(table) else table.assign(roi_std=None), names)

    return stack_course_tables(
        context,
        data_root,
        "radiomics.parquet",
        transform,
        reader=read,
        out_name="unmapped_rois.parquet",
        mapping_digest=names.digest,
        describe=lambda t: {
            "n_unmapped": len(t),
            "mapping": MetadataValue.md(names.describe_markdown()),
            "mapping_sha256": names.digest,
        },
    )
