from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.course_inputs import open_course
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.dicom.sop_classes import Kind
from rt_resources.imaging.mr_course import course_mr_images, mr_series_of
from rt_resources.ingest.refusals import refused_entry, write_refusals
from rt_resources.provenance import digest_of
from rt_resources.resources import DataRoot


@asset(partitions_def=course_partitions, deps=["course_manifest", "structure_masks"], code_version="1", kinds={"nifti"})
@private
def mr_images(context: AssetExecutionContext, data_root: DataRoot):
    """Every MR series of the course (linked by a REG object or the CT's frame of reference) as
    a volume on its own grid (courses/<key>/mr/<label>/image.nii.gz), with the manual masks
    mapped onto it through the rigid registration (mr/<label>/masks/manual/). MR radiomics uses
    these with the MR parameters. A course without MR materializes with n_series = 0 (so
    radiomics downstream still runs); a series that cannot be read or registered is left out
    with the reason."""
    course = open_course(context, data_root)
    paths, manifest = course.paths, course.manifest
    records, notes = course_mr_images(manifest, paths)
    used = {r["series_uid"] for r in records}
    unused = [f for f in manifest.of_kind(Kind.MR) if f.series_uid not in used]
    why = {f.series_uid: next((n for n in notes if f.series_uid in n), "MR series not usable") for f in unused}
    write_refusals(paths.root, "mr_images", [refused_entry(f, why[f.series_uid]) for f in unused])
    if mr_series_of(manifest) and not records:
        raise course.fail(
            "no MR series could be used: " + "; ".join(notes), metadata={"notes": MetadataValue.json(notes)}
        )
    files = manifest.of_kind(Kind.MR, Kind.REG)
    return MaterializeResult(
        data_version=content_version(paths.mr),
        metadata={
            "path": MetadataValue.path(str(paths.mr)),
            "n_series": len(records),
            "series": MetadataValue.json(records),
            "notes": MetadataValue.json(notes),
            **lineage_metadata(
                context,
                source_uids={
                    "mr_series_uids": [r["series_uid"] for r in records],
                    "registration_uids": manifest.registration_uids,
                },
                input_sha256={"mr_reg_files": digest_of(f.sha256 for f in files)},
            ),
        },
    )
