from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from rt_assets.constants import TAG_FINGERPRINT
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private, scrubber_for_course, use_scrubber
from rt_resources.ingest.manifest import build_manifest, write_manifest
from rt_resources.resources import DataRoot, DicomDrop


@asset(partitions_def=course_partitions, code_version="3", kinds={"dicom", "json"})
@private
def course_manifest(context: AssetExecutionContext, data_root: DataRoot, dicom_drop: DicomDrop) -> MaterializeResult:
    """The course as found in the drop: patient, study/series/SOP UIDs and every source file
    with its sha256 (courses/<key>/manifest.json). Everything downstream reads its inputs
    through this manifest, so it is the root of the course's lineage."""
    try:
        course = dicom_drop.course(data_root, context.partition_key)
    except KeyError as exc:
        raise Failure(
            description=f"course {context.partition_key} is no longer in the drop {dicom_drop.root}: {exc}",
        ) from exc
    manifest = build_manifest(course, dicom_drop.root)
    use_scrubber(scrubber_for_course(data_root, course.key, manifest))  # the files it now knows
    path = write_manifest(data_root.course(course.key).root, manifest)

    requested = context.run.tags.get(TAG_FINGERPRINT)
    if requested and not course.fingerprint.startswith(requested):
        context.log.warning(
            f"course content changed since the run was requested ({requested} -> {course.fingerprint[:16]}); "
            "the manifest records the files as they are now"
        )
    counts = {}
    for f in course.files:
        counts[f.header.kind] = counts.get(f.header.kind, 0) + 1
    return MaterializeResult(
        data_version=content_version(path),
        metadata={
            "path": MetadataValue.path(str(path)),
            "n_files": len(course.files),
            "files_by_kind": MetadataValue.json(counts),
            "fingerprint": course.fingerprint,
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in course.notes) or "none"),
            **lineage_metadata(
                context,
                source_uids=manifest.source_uids(),
                input_sha256={"course_files": course.fingerprint},
            ),
        },
    )
