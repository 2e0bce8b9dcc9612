from dagster import AssetExecutionContext, AutomationCondition, Failure, MaterializeResult, MetadataValue, asset

from rt_assets.constants import GPU_POOL
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.ingest.manifest import ManifestError, read_manifest, source_files
from rt_resources.provenance import sha256_file
from rt_resources.qc.checks import autoseg_completeness
from rt_resources.resources import DataRoot, TotalSegmentator
from rt_resources.segmentation.totalseg import (
    DeviceUnavailable,
    WeightsMissing,
    check_ready,
    move_masks,
    run_totalsegmentator,
)
from rt_resources.structures.masks import ROI_INDEX_FILE

SOURCE = "totalseg"
RTSTRUCT_FILE = "rtstruct_totalseg.dcm"


@asset(
    partitions_def=course_partitions,
    deps=["ct_image"],
    pool=GPU_POOL,
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
    series (rtstruct_totalseg.dcm). Runs in the pool `gpu` (one at a time) and in runs tagged
    rt/gpu=true. Without weights it fails at once, saying where they were looked for."""
    import tempfile

    settings = totalsegmentator.settings()
    course_dir = data_root.course_dir(context.partition_key)
    ct_path = course_dir / "ct.nii.gz"
    try:
        checkpoint = check_ready(settings)
        manifest = read_manifest(course_dir)
        ct_files = source_files(manifest, "CT", manifest["ct_series_uid"])
    except (WeightsMissing, ManifestError) as exc:
        raise Failure(description=f"course {context.partition_key}: {exc}") from exc
    context.log.info(
        f"segmentation: device {settings.device}, task {settings.task}{' fast' if settings.fast else ''}, "
        f"threads {settings.threads}, one GPU step at a time (pool {GPU_POOL})"
    )
    with tempfile.TemporaryDirectory(dir=course_dir, prefix=".totalseg-") as tmp:
        try:
            result = run_totalsegmentator(ct_path, tmp, settings)
        except DeviceUnavailable as exc:
            raise Failure(description=f"course {context.partition_key}: {exc}") from exc
        holder = {}

        def write(folder):
            names = move_masks(result.masks, folder)
            records = [{"roi_name": name, "file": file} for name, file in sorted(names.items())]
            write_json_atomic(folder / ROI_INDEX_FILE, records)
            holder["names"] = names

        folder = replace_dir_atomic(course_dir / "masks" / SOURCE, write)
    from rt_resources.structures.export import export_rtstruct

    non_empty = {name: folder / file for name, file in holder["names"].items() if _has_voxels(folder / file)}
    rtstruct = export_rtstruct(
        non_empty, [f["abspath"] for f in ct_files], ct_path, course_dir / RTSTRUCT_FILE, "TotalSegmentator"
    )
    qc = evaluate("totalseg_masks", {"autoseg_completeness": lambda: autoseg_completeness(folder)})
    return MaterializeResult(
        data_version=content_version(folder, rtstruct),
        check_results=check_results(context, course_dir, qc),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "n_classes": len(holder["names"]),
            "n_non_empty": len(non_empty),
            "rtstruct": MetadataValue.path(str(rtstruct)),
            "device": result.device,
            "seconds": round(result.seconds, 2),
            "notes": MetadataValue.json(result.notes),
            **lineage_metadata(
                context,
                source_uids={"ct_series_uid": manifest["ct_series_uid"]},
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
                }  # fmt: skip
            ),
        },
    )


def _has_voxels(path) -> bool:
    import SimpleITK as sitk

    return bool(sitk.GetArrayFromImage(sitk.ReadImage(str(path))).any())  # a copy: a view of a temporary dangles


def _checkpoint_digest(checkpoint) -> str:
    """sha256 of the model checkpoint TotalSegmentator loads (``check_ready`` returns its path)."""
    return sha256_file(checkpoint)
