from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import course_paths
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_resources.course_paths import TOTALSEG
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.provenance import sha256_file
from rt_resources.qc.segmentation import autoseg_completeness
from rt_resources.resources import DataRoot, TotalSegmentator
from rt_resources.segmentation.totalseg import labelmap_to_ct, write_class_masks
from rt_resources.structures.masks import ROI_INDEX_FILE


@asset(
    partitions_def=course_partitions,
    deps=["ct_image", "totalseg_inference"],
    code_version="2",
    kinds={"nifti"},
    check_specs=check_specs("totalseg_masks"),
    automation_condition=after_updates(required=["ct_image", "totalseg_inference"], triggers=["totalseg_inference"]),
)
@private
def totalseg_masks(
    context: AssetExecutionContext, data_root: DataRoot, totalsegmentator: TotalSegmentator
) -> MaterializeResult:
    """TotalSegmentator's classes on the CT grid (courses/<key>/masks/totalseg/<class>.nii.gz, one
    file per non-empty class, names from its class map; rois.json lists every class of the task with
    its voxel count and volume). The label map from the GPU step is resampled back to the CT
    (nearest neighbour, canonical orientation undone) as TotalSegmentator does it, on the CPU,
    after the GPU slot is free. Check: expected organs present for the body region."""
    settings = totalsegmentator.settings()
    paths = course_paths(context, data_root)
    labels = labelmap_to_ct(paths.totalseg_labels, paths.ct, settings)

    def write(folder: Path) -> list[dict]:
        records = write_class_masks(labels, paths.ct, folder, settings.task, settings.roi_subset)
        write_json_atomic(folder / ROI_INDEX_FILE, records)
        return records

    folder = paths.masks(TOTALSEG)
    records = replace_dir_atomic(folder, write)
    volumes = {r["roi_name"]: r["volume_cc"] for r in records}
    qc = evaluate("totalseg_masks", {"autoseg_completeness": lambda: autoseg_completeness(folder, volumes)})
    empty = [r["roi_name"] for r in records if r["empty"]]
    return MaterializeResult(
        data_version=content_version(folder),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "n_classes": len(records),
            "n_non_empty": len(records) - len(empty),
            "empty_classes": MetadataValue.json(empty),
            "volume_cc_total": round(sum(volumes.values()), 1),
            **lineage_metadata(
                context,
                source_uids={},
                input_sha256={
                    "ct.nii.gz": sha256_file(paths.ct),
                    "totalseg_labels.nii.gz": sha256_file(paths.totalseg_labels),
                },
                extra_tools=("TotalSegmentator",),
            ),
        },
    )
