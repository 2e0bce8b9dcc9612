from pathlib import Path

from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, MetadataValue, asset

from rt_assets.constants import GPU_POOL, GPU_STEP_TAGS
from rt_assets.course_inputs import course_failure, course_paths, open_course
from rt_assets.gpu_pool import gpu_lease, lease_metadata
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_resources.course_paths import TOTALSEG
from rt_resources.dicom.sop_classes import Kind
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.provenance import sha256_file
from rt_resources.qc.segmentation import autoseg_completeness
from rt_resources.resources import DataRoot, TotalSegmentator
from rt_resources.segmentation.totalseg import (
    DeviceUnavailable,
    WeightsMissing,
    check_ready,
    move_masks,
    run_totalsegmentator,
)
from rt_resources.structures.masks import ROI_INDEX_FILE


@asset(
    partitions_def=course_partitions,
    deps=["ct_image"],
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    code_version="1",
    kinds={"pytorch", "nifti", "dicom"},
    automation_condition=AutomationCondition.eager(),
    check_specs=check_specs("totalseg_masks"),
)
@private
def totalseg_masks(
    context: AssetExecutionContext, data_root: DataRoot, totalsegmentator: TotalSegmentator
) -> MaterializeResult:
    """TotalSegmentator's classes on the CT grid (courses/<key>/masks/totalseg/<class>.nii.gz,
    names from its class map) and the same structures as a DICOM RTSTRUCT referencing the CT
    series (rtstruct_totalseg.dcm). Runs in the pool `gpu` (one step per GPU slot) and in runs
    tagged rt/gpu=true; the step leases one device of the machine for the segmentation
    (rt_resources/gpu_leases.py: metadata `device`, `device_lease`). Without weights it fails
    at once, saying where they were looked for."""
    import tempfile

    settings = totalsegmentator.settings()
    try:
        checkpoint = check_ready(settings)
    except WeightsMissing as exc:
        raise course_failure(course_paths(context, data_root).key, exc) from exc
    course = open_course(context, data_root)
    paths, manifest = course.paths, course.manifest
    ct_path = paths.ct
    ct_files = course.sources(Kind.CT, manifest.ct_series_uid)
    context.log.info(
        f"segmentation: device {settings.device}, task {settings.task}{' fast' if settings.fast else ''}, "
        f"threads {settings.threads}, one step per GPU slot (pool {GPU_POOL})"
    )
    with tempfile.TemporaryDirectory(dir=paths.root, prefix=".totalseg-") as tmp:
        with gpu_lease(context, data_root, settings.device) as lease:
            try:
                index = lease.ordinal if settings.device == "gpu" else None
                result = run_totalsegmentator(ct_path, tmp, settings, device_index=index)
            except DeviceUnavailable as exc:
                raise course.fail(exc) from exc

        def write(folder: Path) -> dict[str, str]:
            names = move_masks(result.masks, folder)
            records = [{"roi_name": name, "file": file} for name, file in sorted(names.items())]
            write_json_atomic(folder / ROI_INDEX_FILE, records)
            return names

        folder = paths.masks(TOTALSEG)
        names = replace_dir_atomic(folder, write)
    from rt_resources.structures.export import export_rtstruct

    non_empty = {name: folder / file for name, file in names.items() if _has_voxels(folder / file)}
    ct_sources = [f.abspath for f in ct_files]
    rtstruct = export_rtstruct(non_empty, ct_sources, ct_path, paths.totalseg_rtstruct, "TotalSegmentator")
    qc = evaluate("totalseg_masks", {"autoseg_completeness": lambda: autoseg_completeness(folder)})
    return MaterializeResult(
        data_version=content_version(folder, rtstruct),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "n_classes": len(names),
            "n_non_empty": len(non_empty),
            "rtstruct": MetadataValue.path(str(rtstruct)),
            **lease_metadata(lease, settings.device),
            "seconds": round(result.seconds, 2),
            "notes": MetadataValue.json(result.notes),
            **lineage_metadata(
                context,
                source_uids={"ct_series_uid": manifest.ct_series_uid},
                input_sha256={
                    "ct.nii.gz": sha256_file(ct_path),
                    "model_checkpoint": _checkpoint_digest(checkpoint),
                },
                extra_tools=("torch", "TotalSegmentator", "nnunetv2"),
            ),
            "model": MetadataValue.json(
                {
                    "task": settings.task,
                    "fast": settings.fast,
                    "checkpoint": str(checkpoint),
                    "roi_subset": list(settings.roi_subset),
                }
            ),
        },
    )


def _has_voxels(path) -> bool:
    import SimpleITK as sitk

    return bool(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).any())  # a copy: a view of a temporary dangles


def _checkpoint_digest(checkpoint) -> str:
    """sha256 of the model checkpoint TotalSegmentator loads (``check_ready`` returns its path)."""
    return sha256_file(checkpoint)
