"""One asset per custom nnU-Net model folder found in the settings' ``segmentation.models_dir``
(model.yaml each); :mod:`rt_assets.definitions` makes them."""

import os
from pathlib import Path

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from rt_assets.constants import GPU_POOL, GPU_STEP_TAGS, SEGMENTATION_GROUP
from rt_assets.course_inputs import course_failure, course_paths
from rt_assets.gpu_pool import gpu_lease, lease_metadata
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.provenance import digest_of, sha256_file
from rt_resources.resources import DataRoot, SegmentationConfig
from rt_resources.segmentation.nnunet_models import NnUNetModel, run_nnunet_model
from rt_resources.segmentation.totalseg import DeviceUnavailable
from rt_resources.structures.masks import ROI_INDEX_FILE


def nnunet_model_asset(model: NnUNetModel) -> AssetsDefinition:
    """The asset ``nnunet_<name>``: the model's labels as masks/<name>/<label>.nii.gz."""

    @asset(
        name=f"nnunet_{model.name}",
        partitions_def=course_partitions,
        deps=["ct_image"],
        pool=GPU_POOL,
        op_tags=GPU_STEP_TAGS,
        group_name=SEGMENTATION_GROUP,
        code_version="1",
        kinds={"pytorch", "nifti"},
        automation_condition=AutomationCondition.eager(),
        description=f"Custom nnU-Net model {model.name!r} ({model.dataset}, {model.trainer}, "
        f"{model.configuration}, folds {list(model.folds)}): labels {sorted(model.labels.values())} as "
        f"masks/{model.name}/<label>.nii.gz on the CT grid. GPU pool: one step per GPU slot, on a leased device.",
    )
    @private
    def _model_asset(
        context: AssetExecutionContext, data_root: DataRoot, segmentation_config: SegmentationConfig
    ) -> MaterializeResult:
        import tempfile

        paths = course_paths(context, data_root)
        ct_path = paths.ct
        with tempfile.TemporaryDirectory(dir=paths.root, prefix=f".{model.name}-") as tmp:
            device = segmentation_config.device
            with gpu_lease(context, data_root, device) as lease:
                try:
                    index = lease.ordinal if device == "gpu" else None
                    masks, seconds = run_nnunet_model(model, ct_path, Path(tmp), device, index)
                except DeviceUnavailable as exc:
                    raise course_failure(paths.key, exc) from exc

            def write(folder: Path) -> None:
                for path in masks.values():
                    os.replace(path, folder / path.name)
                write_json_atomic(
                    folder / ROI_INDEX_FILE, [{"roi_name": n, "file": p.name} for n, p in sorted(masks.items())]
                )

            folder = paths.masks(model.name)
            replace_dir_atomic(folder, write)
        checkpoints = sorted(model.trained_folder.rglob(model.checkpoint))
        return MaterializeResult(
            data_version=content_version(folder),
            metadata={
                "path": MetadataValue.path(str(folder)),
                "labels": MetadataValue.json(sorted(model.labels.values())),
                **lease_metadata(lease, device),
                "seconds": round(seconds, 2),
                **lineage_metadata(
                    context,
                    source_uids={"model": model.name, "dataset": model.dataset},
                    input_sha256={
                        "ct.nii.gz": sha256_file(ct_path),
                        "model_checkpoints": digest_of(sha256_file(p) for p in checkpoints),
                    },
                    extra_tools=("torch", "nnunetv2"),
                ),
            },
        )

    return _model_asset
