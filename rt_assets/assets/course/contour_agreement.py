import pandas as pd
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import course_paths
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_assets.table_schemas import AGREEMENT, row_count, schema_metadata
from rt_resources.agreement.course import course_agreement
from rt_resources.fileio import write_parquet_atomic
from rt_resources.provenance import sha256_file
from rt_resources.qc.agreement import agreement_dice
from rt_resources.resources import DataRoot, ScienceConfig


@asset(
    partitions_def=course_partitions,
    deps=["structure_masks", "totalseg_masks", "custom_structures", "dvh"],
    code_version="1",
    kinds={"parquet"},
    check_specs=check_specs("contour_agreement"),
    metadata=schema_metadata(AGREEMENT),
    automation_condition=after_updates(required=["structure_masks"], triggers=["totalseg_masks", "dvh"]),
)
@private
def contour_agreement(context: AssetExecutionContext, data_root: DataRoot, science: ScienceConfig):
    """Auto vs manual agreement per organ (courses/<key>/agreement.parquet): every organ with a
    manual contour and an automatic one (TotalSegmentator, a custom model), matched by TG-263 name
    (roi_std): Dice, 95th-percentile Hausdorff distance, mean surface distance (SimpleITK's
    Maurer distance maps on the masks' surfaces, in mm), volume ratio, and the Dmean and D2
    differences from the DVH table. The check agreement_dice flags organs below
    science.agreement_min_dice. Without automatic contours the table is empty."""
    paths = course_paths(context, data_root)
    names = science.name_map()
    dvh = pd.read_parquet(paths.dvh_metrics) if paths.dvh_metrics.exists() else None
    table, notes = course_agreement(context.partition_key, paths.masks_root, dvh, names)
    path = write_parquet_atomic(paths.agreement, table)
    qc = evaluate("contour_agreement", {"agreement_dice": lambda: agreement_dice(table, science.agreement_min_dice)})
    view = table[["roi_std", "source_auto", "dice", "hd95_mm", "msd_mm", "volume_ratio"]].round(3)
    return MaterializeResult(
        data_version=content_version(path),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(path)),
            **row_count(len(table)),
            "median_dice": float(table["dice"].median()) if len(table) else "no pair",
            "agreement": MetadataValue.md(view.to_markdown(index=False) if len(view) else "no organ with both"),
            "skipped": MetadataValue.json(notes),
            **lineage_metadata(
                context,
                source_uids={},
                input_sha256={
                    "dvh_metrics": sha256_file(paths.dvh_metrics) if dvh is not None else "",
                    "roi_names": names.digest,
                },
            ),
        },
    )
