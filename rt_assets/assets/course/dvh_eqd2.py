from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import course_paths, open_course
from rt_assets.lineage import content_version, lineage_metadata, record_skip
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.table_schemas import DVH_EQD2, row_count, schema_metadata
from rt_resources.dicom.sop_classes import Kind
from rt_resources.dose.course import read_dose_info
from rt_resources.dvh.eqd2 import course_dvh_eqd2, summary_table
from rt_resources.fileio import write_parquet_atomic
from rt_resources.imaging.image_header import read_image_header
from rt_resources.ingest.manifest import primary_structure_set
from rt_resources.provenance import sha256_file
from rt_resources.resources import ComputeConfig, DataRoot, ScienceConfig
from rt_resources.structures.rtstruct import read_rois


@asset(
    partitions_def=course_partitions,
    deps=["dose_grid", "structure_masks", "totalseg_masks", "custom_structures"],
    code_version="1",
    kinds={"parquet"},
    output_required=False,
    metadata=schema_metadata(DVH_EQD2),
    automation_condition=after_updates(
        required=["dose_grid", "structure_masks"], triggers=["totalseg_masks", "custom_structures"]
    ),
)
@private
def dvh_eqd2(context: AssetExecutionContext, data_root: DataRoot, compute: ComputeConfig, science: ScienceConfig):
    """DVH metrics in EQD2 per ROI (courses/<key>/dvh_eqd2.parquet: *_eqd2_gy with the alpha/beta
    used and where it came from). Each treatment phase (one plan, its own fractions) converted
    voxel by voxel with the linear-quadratic model, then summed; alpha/beta by the ROI's TG-263
    name (roi_std) from the alpha/beta table. A course whose phases cannot be separated (a
    plan-sum dose) or whose plan has no number of fractions gets empty EQD2 columns and the
    reason (eqd2_reason), never an EQD2 of the summed dose. The cohort's dvh_metrics carries these
    columns beside the physical ones."""
    paths = course_paths(context, data_root)
    if not paths.dose.exists():
        decision = read_dose_info(paths.root).get("decision", "") if paths.dose_info.exists() else ""
        record_skip(context, f"the course has no dose: {decision or 'see dose_grid'}")
        return
    course = open_course(context, data_root)
    struct_uid = primary_structure_set(course.manifest)
    structs = [f for f in course.sources(Kind.RTSTRUCT) if f.sop_instance_uid == struct_uid]
    names, table = science.name_map(), science.alpha_beta_table()
    metrics, notes = course_dvh_eqd2(
        course_key=context.partition_key,
        course_dir=paths.root,
        dose_info=read_dose_info(paths.root),
        rois=read_rois(structs[0].abspath) if structs else [],
        masks_root=paths.masks_root,
        single_plane_mm=read_image_header(paths.ct).GetSpacing()[2],
        name_map=names,
        alpha_beta_table=table,
        workers=compute.worker_count(),
    )
    path = write_parquet_atomic(paths.dvh_eqd2, metrics)
    reasons = sorted({r for r in metrics["eqd2_reason"] if r})
    yield MaterializeResult(
        data_version=content_version(path),
        metadata={
            "path": MetadataValue.path(str(path)),
            **row_count(len(metrics)),
            "eqd2": "computed" if not reasons else "withheld: " + "; ".join(reasons),
            "metrics": MetadataValue.md(summary_table(metrics)),
            "alpha_beta_gy": MetadataValue.json(
                {f"{r['source']}/{r['roi_name']}": r["alpha_beta_gy"] for r in metrics.to_dict("records")}
            ),
            "skipped": MetadataValue.json(notes),
            "conventions": MetadataValue.md(
                "LQ model per phase: EQD2 = D (d + a/b) / (2 + a/b), d = D / n (the phase's own dose per "
                "fraction per voxel); phases summed voxel by voxel; no repopulation or time factor"
            ),
            **lineage_metadata(
                context,
                source_uids={"rtstruct_uid": struct_uid, "rtdose_uids": course.manifest.rtdose_uids},
                input_sha256={
                    "dose.json": sha256_file(paths.dose_info),
                    "roi_names": names.digest,
                    "alpha_beta": table.digest,
                },
            ),
        },
    )
