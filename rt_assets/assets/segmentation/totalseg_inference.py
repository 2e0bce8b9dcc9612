from dagster import AssetExecutionContext, AutomationCondition, MaterializeResult, MetadataValue, asset

from rt_assets.constants import GPU_POOL, GPU_STEP_TAGS
from rt_assets.course_inputs import course_failure, course_paths
from rt_assets.gpu_pool import gpu_lease, lease_metadata
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.provenance import sha256_file
from rt_resources.resources import DataRoot, TotalSegmentator
from rt_resources.segmentation.totalseg import DeviceUnavailable, WeightsMissing, check_ready, engine_device
from rt_resources.segmentation.worker import WorkerError, infer


@asset(
    partitions_def=course_partitions,
    deps=["totalseg_input"],
    pool=GPU_POOL,
    op_tags=GPU_STEP_TAGS,
    code_version="1",
    kinds={"pytorch", "nifti"},
    automation_condition=AutomationCondition.eager(),
)
@private
def totalseg_inference(
    context: AssetExecutionContext, data_root: DataRoot, totalsegmentator: TotalSegmentator
) -> MaterializeResult:
    """TotalSegmentator's label map on the model's grid (courses/<key>/segmentation/totalseg_labels.nii.gz):
    the only step that holds a GPU slot, and it holds it for inference only. It leases one device
    (rt_resources/gpu_leases.py) and hands the prepared input to that device's long-lived worker,
    which keeps the model loaded between courses (rt_resources/segmentation/worker.py); metadata
    `inference_s` (the model's run), `load_s` (loading weights: 0 when the worker held them) and
    the worker's pid. A worker that dies or hangs fails this step only; the next gets a fresh one."""
    settings = totalsegmentator.settings()
    paths = course_paths(context, data_root)
    try:
        checkpoint = check_ready(settings)
    except WeightsMissing as exc:
        raise course_failure(paths.key, exc) from exc
    spec = settings.model_spec()
    with gpu_lease(context, data_root, settings.device) as lease:
        try:
            device = engine_device(settings.device, lease.ordinal if settings.device == "gpu" else None)
            result = infer(
                data_root.state(),
                device,
                spec,
                paths.totalseg_input,
                paths.totalseg_labels,
                timeout_s=settings.inference_timeout_s,
                idle_s=settings.worker_idle_s,
                on_log=context.log.info,
            )
        except (DeviceUnavailable, WorkerError) as exc:
            raise course_failure(paths.key, exc) from exc
    context.log.info(
        f"inference {result.inference_s:.1f} s on {device} (worker pid {result.worker_pid}; "
        f"model load {result.load_s:.1f} s)"
    )
    return MaterializeResult(
        data_version=content_version(paths.totalseg_labels),
        metadata={
            "path": MetadataValue.path(str(paths.totalseg_labels)),
            "inference_s": round(result.inference_s, 3),
            "load_s": round(result.load_s, 3),
            "worker_pid": result.worker_pid,
            "backend": spec.backend,
            "notes": MetadataValue.json(result.notes),
            **lease_metadata(lease, settings.device),
            **lineage_metadata(
                context,
                source_uids={},
                input_sha256={
                    "totalseg_input.nii.gz": sha256_file(paths.totalseg_input),
                    "model_checkpoint": sha256_file(checkpoint),
                },
                extra_tools=("torch", "TotalSegmentator", "nnunetv2"),
            ),
            "model": MetadataValue.json(
                {"task": settings.task, "fast": settings.fast, "backend": spec.backend, "checkpoint": str(checkpoint)}
            ),
        },
    )
