from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.constants import GPU_STEP_TAGS
from rt_assets.course_inputs import open_course
from rt_assets.gpu_pool import leased_gpu_step
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_assets.table_schemas import RADIOMICS, row_count, schema_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.parallel import lower_cpu_priority
from rt_resources.provenance import sha256_file
from rt_resources.qc.radiomics import radiomics_nan
from rt_resources.radiomics.course import course_radiomics, params_sha256
from rt_resources.resources import DataRoot, RadiomicsConfig


def radiomics_asset(pool: str | None = None) -> AssetsDefinition:
    """The ``radiomics`` asset; with ``pool`` (the GPU pool, when fastrad runs on a CUDA device:
    rt_assets/definitions.py) its step takes a slot of that pool and leases a device of the machine
    for the extraction (rt_resources/gpu_leases.py; metadata `device`, `device_lease`)."""

    @asset(
        name="radiomics",
        partitions_def=course_partitions,
        pool=pool,
        op_tags=GPU_STEP_TAGS if pool else None,
        deps=["ct_image", "structure_masks", "mr_images", "pet_metrics", "totalseg_masks", "custom_structures"],
        code_version="4",
        kinds={"parquet"},
        check_specs=check_specs("radiomics"),
        metadata=schema_metadata(RADIOMICS),
        # computed in the course run; recomputed when auto or custom structures arrive later
        automation_condition=after_updates(
            required=["ct_image", "structure_masks"], triggers=["totalseg_masks", "custom_structures"]
        ),
    )
    @private
    def _radiomics(context: AssetExecutionContext, data_root: DataRoot, radiomics_config: RadiomicsConfig):
        """Radiomic features of every mask of the course (masks/<source>/*.nii.gz) on the CT, and
        of the manual masks mapped onto each MR (mr/<label>/masks/manual, source "<label>/manual")
        with the MR parameters, and of every mask mapped onto each PET's SUVbw image
        (pet/<label>/masks/<source>, source "<label>/<source>") with the PET parameters (PET.yaml:
        SUV not normalised, fixed bin width 0.25 SUV) (courses/<key>/radiomics.parquet: course_key, roi_name,
        source, then one column per feature with pyradiomics' own name). Which parameter set an
        ROI gets is radiomics.policy's (rt_resources/radiomics/policy.py): by default the full set
        for manual and custom ROIs, MR ROIs and the organs at risk of radiomics.full_rois, the basic
        set (first-order and shape) for the other auto-segmented organs, the light set for BODY; a
        feature an ROI's set does not compute is empty in its row. The ``rois`` metadata gives each
        ROI's set and why, its voxels, volume and CPU seconds; ``core_seconds`` sums them by ROI size
        and by set. One task per (source, ROI) in a process pool of (cores - 1) workers with retries
        and adaptive halving on memory errors or killed workers; couch/support/table ROIs and tiny
        masks are skipped with the reason; an ROI that still fails is recorded here, the others'
        features are kept. The feature classes are computed by pyradiomics, or by fastrad (torch, on
        the GPU) with radiomics.backend fastrad/auto; the images (resampling, filters) are
        pyradiomics' either way and the names are pyradiomics', so the table has one shape; the
        ``backend`` metadata says which code computed what, per ROI."""
        course = open_course(context, data_root)
        paths = course.paths
        settings = radiomics_config.settings()
        workers = radiomics_config.worker_count()
        lower_cpu_priority()  # batch work: the CPU stages that feed the GPU go first
        with leased_gpu_step(context, data_root, settings.backend, pool) as device_metadata:
            table, summary = course_radiomics(
                paths.ct,
                paths.masks_root,
                course.key,
                settings,
                workers,
                sequential=radiomics_config.sequential,
                mr_root=paths.mr,
                pet_root=paths.pet,
            )
        if summary["n_tasks"] and not summary["n_ok"]:
            raise course.fail(
                "radiomics failed for every ROI", metadata={"failures": MetadataValue.json(summary["failures"])}
            )
        path = write_parquet_atomic(paths.radiomics, table)
        params_digest = params_sha256(settings)
        uses_fastrad = any(r.get("backend") == "fastrad" for r in summary["backend"]["rois"])
        param_sets = {(r["source"], r["roi_name"]): r["param_set"] for r in summary["rois"]}
        qc = evaluate(
            "radiomics",
            {
                "radiomics_nan": lambda: radiomics_nan(
                    table, features_by_source=summary["own_features"], param_sets=param_sets
                )
            },
        )
        return MaterializeResult(
            data_version=content_version(path),
            check_results=check_results(context, paths.root, qc),
            metadata={
                "path": MetadataValue.path(str(path)),
                "output_sha256": sha256_file(path),
                "n_rois": summary["n_ok"],
                **row_count(len(table)),
                "n_features": max(0, table.shape[1] - 4),
                "partial": bool(summary["failures"]),
                "failures": MetadataValue.json(summary["failures"]),
                "skipped": MetadataValue.json(summary["skipped"]),
                "workers": 1 if radiomics_config.sequential else workers,
                "seconds": round(summary["seconds"], 2),
                "policy": summary["policy"],
                "rois": MetadataValue.json(summary["rois"]),
                "core_seconds": MetadataValue.json(summary["core_seconds"]),
                "param_warnings": MetadataValue.json(summary["param_warnings"]),
                "pyradiomics_version": summary["pyradiomics_version"],
                "params": MetadataValue.path(str(settings.params)),
                "mr_params": MetadataValue.path(str(settings.mr_params)),
                "basic_params": MetadataValue.path(str(settings.basic_params)),
                "light_params": MetadataValue.path(str(settings.light_params or "")),
                "params_sha256": params_digest,
                "backend": MetadataValue.json(summary["backend"]),
                **device_metadata,
                **lineage_metadata(
                    context,
                    source_uids={"ct_series_uid": course.manifest.ct_series_uid},
                    input_sha256={"ct.nii.gz": sha256_file(paths.ct), "params": params_digest},
                    extra_tools=("pyradiomics-bhklab", *(("fastrad", "torch") if uses_fastrad else ())),
                ),
            },
        )

    return _radiomics


radiomics = radiomics_asset()
