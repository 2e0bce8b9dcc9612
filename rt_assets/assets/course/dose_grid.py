from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from rt_assets.lineage import lineage_metadata, record_skip
from rt_assets.partitions import course_partitions
from rt_resources.dose.course import DOSE_FILE, DOSE_INFO_FILE, course_total_dose, dose_info
from rt_resources.fileio import write_atomic, write_json_atomic
from rt_resources.ingest.manifest import ManifestError, read_manifest
from rt_resources.provenance import digest_of
from rt_resources.resources import DataRoot


@asset(partitions_def=course_partitions, deps=["course_manifest"], code_version="1", kinds={"nifti"},
       output_required=False)  # fmt: skip
def dose_grid(context: AssetExecutionContext, data_root: DataRoot):
    """The course's total dose in Gy (courses/<key>/dose.nii.gz, dose.json): DoseGridScaling
    applied exactly once; a plan-sum dose as is, BEAM doses of a plan summed, primary and boost
    plans summed on a common grid, doses on another frame of reference never summed. The
    decision and the prescription are in the metadata. A course without a usable dose
    (no RTDOSE, or a RELATIVE one) is not materialized: the reason is logged as an observation
    and the DVH is skipped."""
    import SimpleITK as sitk

    course_dir = data_root.course_dir(context.partition_key)
    try:
        manifest = read_manifest(course_dir)
        total, plans, inputs = course_total_dose(manifest)
    except ManifestError as exc:
        raise Failure(description=f"course {context.partition_key}: {exc}") from exc
    info = dose_info(total, plans)
    components = MetadataValue.json(total.components)
    if total.image is None:
        record_skip(context, total.decision, components=components)
        return
    write_json_atomic(course_dir / DOSE_INFO_FILE, info)
    image = sitk.Cast(total.image, sitk.sitkFloat32)
    path = write_atomic(course_dir / DOSE_FILE, lambda tmp: sitk.WriteImage(image, str(tmp), True))
    yield MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "decision": total.decision,
            "prescription_gy": total.prescription_gy if total.prescription_gy is not None else "unknown",
            "max_gy": float(sitk.GetArrayViewFromImage(total.image).max()),
            "size_voxels": MetadataValue.json(list(total.image.GetSize())),
            "spacing_mm": MetadataValue.json([round(v, 4) for v in total.image.GetSpacing()]),
            "components": components,
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in total.notes) or "none"),
            **lineage_metadata(
                context,
                source_uids={"rtdose_uids": manifest["rtdose_uids"], "rtplan_uids": total.plans_summed},
                input_sha256={"rtdose_rtplan_files": digest_of(f["sha256"] for f in inputs)},
            ),
        }
    )
