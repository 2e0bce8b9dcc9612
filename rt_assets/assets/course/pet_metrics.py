from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import open_course
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.table_schemas import PET_METRICS, row_count, schema_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.pet.course import SUV_BW, course_pet_metrics, pet_records
from rt_resources.provenance import sha256_file
from rt_resources.resources import DataRoot


@asset(
    partitions_def=course_partitions,
    deps=["pet_images", "structure_masks", "totalseg_masks", "custom_structures"],
    code_version="1",
    kinds={"parquet"},
    metadata=schema_metadata(PET_METRICS),
    # computed in the course run; recomputed when auto or custom structures arrive later
    automation_condition=after_updates(
        required=["pet_images", "structure_masks"], triggers=["totalseg_masks", "custom_structures"]
    ),
)
@private
def pet_metrics(context: AssetExecutionContext, data_root: DataRoot):
    """SUV metrics of every ROI (manual, automatic, custom) on every PET series with SUV
    (courses/<key>/pet_metrics.parquet): SUVmax, SUVmean, SUVpeak (1 cm³ sphere), SUV std,
    metabolic tumour volume at 40 % of SUVmax and at SUV 2.5, total lesion glycolysis, and SUVlbm
    where height and sex are known. Each ROI is mapped onto the PET's own grid (nearest neighbour,
    through the CT -> PET matrix; written to pet/<label>/masks/<source>/, which PET radiomics
    reads): SUV is measured on the PET's voxels, never on interpolated values. A course without
    PET has an empty table."""
    course = open_course(context, data_root)
    paths = course.paths
    table, notes = course_pet_metrics(paths, course.key)
    path = write_parquet_atomic(paths.pet_metrics, table)
    records = pet_records(paths)
    lesion = table.sort_values("suv_max", ascending=False).head(10) if len(table) else table
    return MaterializeResult(
        data_version=content_version(path),
        metadata={
            "path": MetadataValue.path(str(path)),
            **row_count(len(table)),
            "n_pet": len(records),
            "notes": MetadataValue.json(notes[:50]),
            "highest_suv_max": MetadataValue.md(
                lesion[["pet", "roi_name", "source", "suv_max", "suv_peak", "mtv40_cc"]].to_markdown(index=False)
                if len(lesion)
                else "no PET"
            ),
            **lineage_metadata(
                context,
                source_uids={"pet_series_uids": [r["series_uid"] for r in records]},
                input_sha256={
                    r["label"]: sha256_file(paths.pet / r["label"] / SUV_BW) for r in records if r["has_suv"]
                },
            ),
        },
    )
