from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import open_course
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.course_paths import TOTALSEG
from rt_resources.dicom.sop_classes import Kind
from rt_resources.provenance import sha256_file
from rt_resources.resources import ComputeConfig, DataRoot
from rt_resources.structures.export import export_rtstruct
from rt_resources.structures.masks import mask_index


@asset(
    partitions_def=course_partitions,
    deps=["totalseg_masks"],
    code_version="1",
    kinds={"dicom"},
    automation_condition=after_updates(required=["totalseg_masks"]),
)
@private
def totalseg_rtstruct(context: AssetExecutionContext, data_root: DataRoot, compute: ComputeConfig) -> MaterializeResult:
    """TotalSegmentator's non-empty classes as one DICOM RTSTRUCT referencing the course's CT series
    (courses/<key>/rtstruct_totalseg.dcm), with voxel-exact outlines (rasterized back, the masks
    come out voxel for voxel). A step of its own, on the CPU, after the GPU slot is free; ROIs are
    traced in parallel."""
    course = open_course(context, data_root)
    paths, manifest = course.paths, course.manifest
    masks = {m["roi_name"]: m["path"] for m in mask_index(paths.masks(TOTALSEG))}
    ct_files = [f.abspath for f in course.sources(Kind.CT, manifest.ct_series_uid)]
    workers = compute.worker_count()
    out = export_rtstruct(masks, ct_files, paths.ct, paths.totalseg_rtstruct, "TotalSegmentator", workers=workers)
    return MaterializeResult(
        data_version=content_version(out),
        metadata={
            "path": MetadataValue.path(str(out)),
            "n_rois": len(masks),
            **lineage_metadata(
                context,
                source_uids={"ct_series_uid": manifest.ct_series_uid},
                input_sha256={"ct.nii.gz": sha256_file(paths.ct)},
                extra_tools=("rt-utils",),
            ),
        },
    )
