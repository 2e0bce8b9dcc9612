from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.ingest.manifest import ManifestError, primary_structure_set, read_manifest, source_files
from rt_resources.ingest.refusals import refused_entry, write_refusals
from rt_resources.provenance import sha256_file
from rt_resources.qc.checks import mask_vs_contour_volume, structure_boundary
from rt_resources.resources import DataRoot
from rt_resources.structures.masks import ROI_INDEX_FILE, write_masks
from rt_resources.structures.rtstruct import read_rois


@asset(partitions_def=course_partitions, deps=["course_manifest", "ct_image"], code_version="1", kinds={"nifti"},
       check_specs=check_specs("structure_masks"))  # fmt: skip
@private
def structure_masks(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every ROI of the course's RTSTRUCT as a mask on the CT grid
    (courses/<key>/masks/manual/<roi>.nii.gz, uint8), voxel centres inside the contours
    (even-odd rule: inner contours are holes). File names are sanitized ROI names; the exact
    names are in masks/manual/rois.json and in every table. ROIs without contours are
    listed, not dropped."""
    import SimpleITK as sitk

    course_dir = data_root.course_dir(context.partition_key)
    try:
        manifest = read_manifest(course_dir)
        struct_uid = primary_structure_set(manifest)
        (struct,) = [f for f in source_files(manifest, "RTSTRUCT") if f["sop_instance_uid"] == struct_uid]
    except ManifestError as exc:
        raise Failure(description=f"course {context.partition_key}: {exc}") from exc
    write_refusals(
        course_dir,
        "structure_masks",
        [refused_entry(f, f"not the course's primary structure set (that is {struct_uid}, the one its plans reference)")
         for f in manifest["files"] if f["kind"] == "RTSTRUCT" and f["sop_instance_uid"] != struct_uid],
    )  # fmt: skip
    ct_path = course_dir / "ct.nii.gz"
    ct = sitk.ReadImage(str(ct_path))
    rois = read_rois(struct["abspath"])

    def write(folder):
        records = write_masks(rois, ct, folder)
        write_json_atomic(folder / ROI_INDEX_FILE, records)
        return records

    holder = {}
    folder = replace_dir_atomic(course_dir / "masks" / "manual", lambda tmp: holder.update(records=write(tmp)))
    records = holder["records"]
    qc = evaluate(
        "structure_masks",
        {
            "structure_boundary": lambda: structure_boundary(ct_path, folder),
            "mask_vs_contour_volume": lambda: mask_vs_contour_volume(rois, folder, ct.GetSpacing()[2]),
        },
    )
    empty = [r["roi_name"] for r in records if r["empty"]]
    noted = {r["roi_name"]: r["notes"] for r in records if r["notes"]}
    return MaterializeResult(
        data_version=content_version(folder),
        check_results=check_results(context, course_dir, qc),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "n_rois": len(records),
            "n_masks": sum(1 for r in records if r["file"]),
            "rois_without_contours": MetadataValue.json(empty),
            "roi_notes": MetadataValue.json(noted),
            "volumes_cc": MetadataValue.json({r["roi_name"]: round(r["volume_cc"], 3) for r in records}),
            **lineage_metadata(
                context,
                source_uids={"rtstruct_uid": struct_uid, "ct_series_uid": manifest["ct_series_uid"]},
                input_sha256={"rtstruct": struct["sha256"], "ct.nii.gz": sha256_file(ct_path)},
            ),
        },
    )
