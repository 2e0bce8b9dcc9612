import numpy as np
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.course_inputs import open_course
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private, scrub
from rt_assets.qc import blocking_failures, check_results, check_specs, evaluate
from rt_resources.dicom.sop_classes import Kind
from rt_resources.fileio import write_atomic
from rt_resources.imaging.ct_series import CTSeriesError, read_ct_volume, validate_ct_series
from rt_resources.ingest.manifest import ManifestError, source_files
from rt_resources.ingest.refusals import refused_entry, write_refusals
from rt_resources.provenance import digest_of
from rt_resources.qc.geometry import ct_geometry, frame_of_reference
from rt_resources.resources import DataRoot


@asset(
    partitions_def=course_partitions,
    deps=["course_manifest"],
    code_version="2",
    kinds={"nifti"},
    check_specs=check_specs("ct_image"),
)
@private
def ct_image(context: AssetExecutionContext, data_root: DataRoot):
    """The planning CT as one volume in HU (courses/<key>/ct.nii.gz), with origin, spacing
    and direction from the DICOM headers. A series with uneven spacing (a missing slice),
    gantry tilt or mixed orientation fails with the offending file named. Checks (blocking):
    frame of reference consistent across CT, RTSTRUCT and RTDOSE; CT geometry."""
    import SimpleITK as sitk

    course = open_course(context, data_root)
    paths, manifest = course.paths, course.manifest
    files, validated, error = None, None, None
    try:  # hash and validate the series once: the geometry check reuses the outcome
        files = source_files(manifest, Kind.CT, manifest.ct_series_uid)
        validated = validate_ct_series([f.abspath for f in files])
    except (ManifestError, CTSeriesError) as exc:
        error = exc
        validated = exc if isinstance(exc, CTSeriesError) else None
    qc = evaluate(
        "ct_image",
        {
            "frame_of_reference": lambda: frame_of_reference(manifest),
            "ct_geometry": lambda: ct_geometry(manifest, files, validated),
        },
    )
    # a blocking failure leaves every file of the course unused: say so (and clear it once they pass)
    failed = blocking_failures("ct_image", qc)
    why = "the course stopped at its CT: " + "; ".join(f"{r.name}: {scrub(r.description)}" for r in failed)
    write_refusals(paths.root, "ct_image", [refused_entry(f, why) for f in manifest.files] if failed else [])
    try:
        if error is not None:
            raise error
        geometry = validated
        image = read_ct_volume(geometry)
    except (ManifestError, CTSeriesError) as exc:
        yield from check_results(context, paths.root, qc)
        raise course.fail(exc) from exc
    path = write_atomic(paths.ct, lambda tmp: sitk.WriteImage(image, str(tmp), True))
    hu = sitk.GetArrayViewFromImage(image)
    yield MaterializeResult(
        data_version=content_version(path),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(path)),
            "size_voxels": MetadataValue.json(list(geometry.size)),
            "spacing_mm": MetadataValue.json([round(v, 4) for v in geometry.spacing_mm]),
            "origin_mm": MetadataValue.json([round(v, 3) for v in geometry.origin_mm]),
            "direction": MetadataValue.json([round(v, 6) for v in geometry.direction]),
            "hu_range": MetadataValue.json([float(np.min(hu)), float(np.max(hu))]),
            "pixel_type": image.GetPixelIDTypeAsString(),
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in geometry.notes) or "none"),
            **lineage_metadata(
                context,
                source_uids={
                    "ct_study_uid": manifest.ct_study_uid,
                    "ct_series_uid": manifest.ct_series_uid,
                    "frame_of_reference_uid": manifest.frame_of_reference_uid,
                    "n_sop_instances": len(geometry.sop_instance_uids),
                },
                input_sha256={
                    "ct_files": digest_of(f.sha256 for f in files),
                    "manifest": manifest.fingerprint,
                },
            ),
        },
    )
