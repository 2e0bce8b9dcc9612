from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_resources.fileio import write_parquet_atomic
from rt_resources.imaging.mr_course import MR_DIR
from rt_resources.ingest.manifest import ManifestError, read_manifest
from rt_resources.provenance import sha256_file
from rt_resources.qc.checks import radiomics_nan
from rt_resources.radiomics.course import course_radiomics, params_sha256
from rt_resources.resources import DataRoot, RadiomicsConfig


@asset(
    partitions_def=course_partitions,
    deps=["ct_image", "structure_masks", "mr_images", "totalseg_masks", "custom_structures"],
    code_version="3",
    kinds={"parquet"},
    check_specs=check_specs("radiomics"),
    # computed in the course run; recomputed when auto or custom structures arrive later
    automation_condition=after_updates(
        required=["ct_image", "structure_masks"], triggers=["totalseg_masks", "custom_structures"]
    ),
)
@private
def radiomics(context: AssetExecutionContext, data_root: DataRoot, radiomics_config: RadiomicsConfig):
    """pyradiomics features of every mask of the course (masks/<source>/*.nii.gz) on the CT, and
    of the manual masks mapped onto each MR (mr/<label>/masks/manual, source "<label>/manual")
    with the MR parameters (courses/<key>/radiomics.parquet: course_key, roi_name,
    source, then one column per feature with pyradiomics' own name). One task per (source, ROI) in a process pool of
    (cores - 1) workers with retries and adaptive halving on memory errors or killed workers;
    couch/support/table ROIs and tiny masks are skipped with the reason; an ROI that still fails
    is recorded here, the others' features are kept."""
    course_dir = data_root.course_dir(context.partition_key)
    try:
        manifest = read_manifest(course_dir)
    except ManifestError as exc:
        raise Failure(description=f"course {context.partition_key}: {exc}") from exc
    settings = radiomics_config.settings()
    workers = radiomics_config.worker_count()
    ct_path = course_dir / "ct.nii.gz"
    table, summary = course_radiomics(
        ct_path, course_dir / "masks", context.partition_key, settings, workers,
        sequential=radiomics_config.sequential, mr_root=course_dir / MR_DIR,
    )  # fmt: skip
    if summary["n_tasks"] and not summary["n_ok"]:
        raise Failure(
            description=f"course {context.partition_key}: radiomics failed for every ROI",
            metadata={"failures": MetadataValue.json(summary["failures"])},
        )
    path = write_parquet_atomic(course_dir / "radiomics.parquet", table)
    qc = evaluate(
        "radiomics", {"radiomics_nan": lambda: radiomics_nan(table, features_by_source=summary["own_features"])}
    )
    return MaterializeResult(
        data_version=content_version(path),
        check_results=check_results(context, course_dir, qc),
        metadata={
            "path": MetadataValue.path(str(path)),
            "output_sha256": sha256_file(path),
            "n_rois": summary["n_ok"],
            "n_features": max(0, table.shape[1] - 4),
            "partial": bool(summary["failures"]),
            "failures": MetadataValue.json(summary["failures"]),
            "skipped": MetadataValue.json(summary["skipped"]),
            "workers": 1 if radiomics_config.sequential else workers,
            "seconds": round(summary["seconds"], 2),
            "pyradiomics_version": summary["pyradiomics_version"],
            "params": MetadataValue.path(str(settings.params)),
            "mr_params": MetadataValue.path(str(settings.mr_params)),
            "params_sha256": params_sha256(settings),
            **lineage_metadata(
                context,
                source_uids={"ct_series_uid": manifest["ct_series_uid"]},
                input_sha256={"ct.nii.gz": sha256_file(ct_path), "params": params_sha256(settings)},
                extra_tools=("pyradiomics-bhklab",),
            ),
        },
    )
