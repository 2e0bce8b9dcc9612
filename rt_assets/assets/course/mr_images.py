from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.imaging.mr_course import MR_DIR, course_mr_images, mr_series_of
from rt_resources.ingest.manifest import ManifestError, read_manifest
from rt_resources.ingest.refusals import refused_entry, write_refusals
from rt_resources.provenance import digest_of
from rt_resources.resources import DataRoot


@asset(partitions_def=course_partitions, deps=["course_manifest", "structure_masks"], code_version="1",
       kinds={"nifti"})  # fmt: skip
@private
def mr_images(context: AssetExecutionContext, data_root: DataRoot):
    """Every MR series of the course (linked by a REG object or the CT's frame of reference) as
    a volume on its own grid (courses/<key>/mr/<label>/image.nii.gz), with the manual masks
    mapped onto it through the rigid registration (mr/<label>/masks/manual/). MR radiomics uses
    these with the MR parameters. A course without MR materializes with n_series = 0 (so
    radiomics downstream still runs); a series that cannot be read or registered is left out
    with the reason."""
    course_dir = data_root.course_dir(context.partition_key)
    try:
        manifest = read_manifest(course_dir)
    except ManifestError as exc:
        raise Failure(description=f"course {context.partition_key}: {exc}") from exc
    records, notes = course_mr_images(manifest, course_dir)
    used = {r["series_uid"] for r in records}
    write_refusals(
        course_dir,
        "mr_images",
        [refused_entry(f, next((n for n in notes if f["series_uid"] in n), "MR series not usable"))
         for f in manifest["files"] if f["kind"] == "MR" and f["series_uid"] not in used],
    )  # fmt: skip
    if mr_series_of(manifest) and not records:
        raise Failure(
            description=f"course {context.partition_key}: no MR series could be used: " + "; ".join(notes),
            metadata={"notes": MetadataValue.json(notes)},
        )
    files = [f for f in manifest["files"] if f["kind"] in ("MR", "REG")]
    return MaterializeResult(
        data_version=content_version(course_dir / MR_DIR),
        metadata={
            "path": MetadataValue.path(str(course_dir / MR_DIR)),
            "n_series": len(records),
            "series": MetadataValue.json(records),
            "notes": MetadataValue.json(notes),
            **lineage_metadata(
                context,
                source_uids={
                    "mr_series_uids": [r["series_uid"] for r in records],
                    "registration_uids": manifest["registration_uids"],
                },
                input_sha256={"mr_reg_files": digest_of(f["sha256"] for f in files)},
            ),
        },
    )
