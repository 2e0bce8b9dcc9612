from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import course_paths, open_course
from rt_assets.lineage import content_version, lineage_metadata, record_skip
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate, not_evaluated
from rt_assets.table_schemas import DVH_METRICS, row_count, schema_metadata
from rt_resources.course_paths import MANUAL
from rt_resources.dicom.sop_classes import Kind
from rt_resources.dose.course import read_dose_info
from rt_resources.dvh.course import course_dvh, summary_table
from rt_resources.fileio import write_parquet_atomic
from rt_resources.imaging.image_header import read_image_header
from rt_resources.ingest.manifest import primary_structure_set
from rt_resources.provenance import sha256_file
from rt_resources.qc.dose import dose_coverage, dvh_sanity
from rt_resources.qc.previews.dvh_plot import dvh_plot_png
from rt_resources.qc.previews.render import png_markdown
from rt_resources.resources import ComputeConfig, DataRoot
from rt_resources.structures.rtstruct import read_rois


@asset(
    partitions_def=course_partitions,
    deps=["dose_grid", "structure_masks", "totalseg_masks", "custom_structures"],
    code_version="4",
    kinds={"parquet"},
    output_required=False,
    check_specs=check_specs("dvh"),
    metadata=schema_metadata(DVH_METRICS),
    # computed in the course run; recomputed when auto or custom structures arrive later
    automation_condition=after_updates(
        required=["dose_grid", "structure_masks"], triggers=["totalseg_masks", "custom_structures"]
    ),
)
@private
def dvh(context: AssetExecutionContext, data_root: DataRoot, compute: ComputeConfig):
    """Dose-volume metrics and curves per ROI (courses/<key>/dvh_metrics.parquet,
    dvh_curves.parquet). Manual ROIs: contour-based, each contour plane a slab, supersampled
    in plane, trilinear dose. Every other masks/<source>/ folder: mask-based, the dose
    interpolated at the voxel centres. One metric code for both (rt_resources.dvh.metrics)."""

    paths = course_paths(context, data_root)
    if not paths.dose.exists():
        decision = read_dose_info(paths.root).get("decision", "") if paths.dose_info.exists() else ""
        record_skip(context, f"the course has no dose: {decision or 'see dose_grid'}")
        yield from check_results(context, paths.root, not_evaluated("dvh", "the course has no dose, no DVH"))
        return
    course = open_course(context, data_root)
    manifest = course.manifest
    struct_uid = primary_structure_set(manifest)
    structs = [f for f in course.sources(Kind.RTSTRUCT) if f.sop_instance_uid == struct_uid]
    info = read_dose_info(paths.root)
    rx = info["prescription_gy"]
    ct = read_image_header(paths.ct)  # the header is enough: the CT slice spacing
    metrics, curves, notes = course_dvh(
        course_key=context.partition_key,
        dose_path=paths.dose,
        rois=read_rois(structs[0].abspath) if structs else [],
        masks_root=paths.masks_root,
        prescription_gy=rx,
        single_plane_mm=ct.GetSpacing()[2],
        workers=compute.worker_count(),
    )
    metrics_path = write_parquet_atomic(paths.dvh_metrics, metrics)
    write_parquet_atomic(paths.dvh_curves, curves)
    qc = evaluate(
        "dvh",
        {
            "dose_coverage": lambda: dose_coverage(paths.dose, paths.masks(MANUAL)),
            "dvh_sanity": lambda: dvh_sanity(metrics),
        },
    )
    plot = dvh_plot_png(curves, paths.preview("dvh.png"), prescription_gy=rx, title="cumulative DVH")
    yield MaterializeResult(
        data_version=content_version(metrics_path, paths.dvh_curves),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(metrics_path)),
            "output_sha256": sha256_file(metrics_path),
            "n_rois": len(metrics),
            **row_count(len(metrics)),
            "prescription_gy": rx if rx is not None else "unknown",
            "metrics": MetadataValue.md(summary_table(metrics)),
            "dvh_plot": MetadataValue.md(png_markdown(plot["path"], alt="DVH", max_width_px=800)),
            "skipped": MetadataValue.json(notes),
            "conventions": MetadataValue.md(
                "cumulative DVH; D_x = minimum dose of the hottest x %; 1 mGy histogram bins; "
                "contour planes = slabs of the local plane spacing, no end-capping; trilinear dose"
            ),
            **lineage_metadata(
                context,
                source_uids={"rtstruct_uid": struct_uid, "rtdose_uids": manifest.rtdose_uids},
                input_sha256={
                    "dose.nii.gz": sha256_file(paths.dose),
                    "rtstruct": structs[0].sha256 if structs else "",
                },
            ),
        },
    )
