from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.course_inputs import open_course
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_resources.course_paths import MANUAL
from rt_resources.dicom.sop_classes import Kind
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.ingest.manifest import primary_structure_set
from rt_resources.ingest.refusals import refused_entry, write_refusals
from rt_resources.provenance import sha256_file
from rt_resources.qc.structures import mask_vs_contour_volume, structure_boundary
from rt_resources.resources import DataRoot
from rt_resources.structures.masks import ROI_INDEX_FILE, write_masks
from rt_resources.structures.rtstruct import read_rois


@asset(
    partitions_def=course_partitions,
    deps=["course_manifest", "ct_image"],
    code_version="1",
    kinds={"nifti"},
    check_specs=check_specs("structure_masks"),
)
@private
def structure_masks(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """Every ROI of the course's RTSTRUCT as a mask on the CT grid
    (courses/<key>/masks/manual/<roi>.nii.gz, uint8), voxel centres inside the contours
    (even-odd rule: inner contours are holes). File names are sanitized ROI names; the exact
    names are in masks/manual/rois.json and in every table. ROIs without contours are
    listed, not dropped.

    The reference course asset: open the course (paths and manifest, or a failure naming the
    course), resolve the sources through the manifest, write the output atomically, evaluate
    the checks, and return the lineage. See README "Adding an asset"."""
    import SimpleITK as sitk

    course = open_course(context, data_root)
    paths, manifest = course.paths, course.manifest
    struct_uid = primary_structure_set(manifest)
    (struct,) = [f for f in course.sources(Kind.RTSTRUCT) if f.sop_instance_uid == struct_uid]
    others = [f for f in manifest.of_kind(Kind.RTSTRUCT) if f.sop_instance_uid != struct_uid]
    why = f"not the course's primary structure set (that is {struct_uid}, the one its plans reference)"
    write_refusals(paths.root, "structure_masks", [refused_entry(f, why) for f in others])
    ct = sitk.ReadImage(str(paths.ct))
    rois = read_rois(struct.abspath)

    def write(folder: Path) -> list[dict]:
        records = write_masks(rois, ct, folder)
        write_json_atomic(folder / ROI_INDEX_FILE, records)
        return records

    folder = paths.masks(MANUAL)
    records = replace_dir_atomic(folder, write)
    qc = evaluate(
        "structure_masks",
        {
            "structure_boundary": lambda: structure_boundary(paths.ct, folder),
            "mask_vs_contour_volume": lambda: mask_vs_contour_volume(rois, folder, ct.GetSpacing()[2]),
        },
    )
    empty = [r["roi_name"] for r in records if r["empty"]]
    noted = {r["roi_name"]: r["notes"] for r in records if r["notes"]}
    return MaterializeResult(
        data_version=content_version(folder),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "n_rois": len(records),
            "n_masks": sum(1 for r in records if r["file"]),
            "rois_without_contours": MetadataValue.json(empty),
            "roi_notes": MetadataValue.json(noted),
            "volumes_cc": MetadataValue.json({r["roi_name"]: round(r["volume_cc"], 3) for r in records}),
            **lineage_metadata(
                context,
                source_uids={"rtstruct_uid": struct_uid, "ct_series_uid": manifest.ct_series_uid},
                input_sha256={"rtstruct": struct.sha256, "ct.nii.gz": sha256_file(paths.ct)},
            ),
        },
    )
