from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, MetadataValue, asset

from rt_assets.course_inputs import course_paths
from rt_assets.lineage import content_version, lineage_metadata, record_skip
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.provenance import sha256_file
from rt_resources.resources import DataRoot, TotalSegmentator
from rt_resources.segmentation.totalseg import WeightsMissing, check_ready, prepare_input


@asset(
    partitions_def=course_partitions,
    deps=["ct_image"],
    code_version="1",
    kinds={"nifti"},
    output_required=False,
    automation_condition=AutomationCondition.eager(),
)
@private
def totalseg_input(context: AssetExecutionContext, data_root: DataRoot, totalsegmentator: TotalSegmentator):
    """TotalSegmentator's input, prepared on the CPU before the GPU step
    (courses/<key>/segmentation/totalseg_input.nii.gz): the CT in the closest canonical orientation,
    resampled to the model's spacing (1.5 mm; 3 mm with --totalseg-fast) as TotalSegmentator does
    it. Part of the course stage, so the next course's input is ready while another is on the GPU.
    Not materialized where TotalSegmentator cannot run (no weights), saying why."""
    settings = totalsegmentator.settings()
    try:
        check_ready(settings)
    except WeightsMissing as exc:
        record_skip(context, f"TotalSegmentator cannot run here: {exc}")
        return
    paths = course_paths(context, data_root)
    info = prepare_input(paths.ct, paths.totalseg_input, settings)
    yield MaterializeResult(
        data_version=content_version(paths.totalseg_input),
        metadata={
            "path": MetadataValue.path(str(paths.totalseg_input)),
            "shape": MetadataValue.json(info["shape"]),
            "spacing_mm": info["spacing_mm"],
            **lineage_metadata(
                context,
                source_uids={},
                input_sha256={"ct.nii.gz": sha256_file(paths.ct)},
                extra_tools=("TotalSegmentator",),
            ),
        },
    )
