from pathlib import Path

from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import course_failure, course_paths
from rt_assets.lineage import content_version, lineage_metadata, record_skip
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate, not_evaluated
from rt_resources.course_paths import CT, MANUAL, MASKS, TOTALSEG
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.provenance import sha256_file
from rt_resources.qc.structures import structure_boundary
from rt_resources.resources import DataRoot, SegmentationConfig
from rt_resources.segmentation.crop import REGIONS, LandmarkError, crop_bounds, crop_image


@asset(
    partitions_def=course_partitions,
    deps=["ct_image", "totalseg_masks"],
    code_version="1",
    kinds={"nifti"},
    output_required=False,
    check_specs=check_specs("ct_crop"),
    automation_condition=after_updates(required=["ct_image", "totalseg_masks"]),
)
@private
def ct_crop(context: AssetExecutionContext, data_root: DataRoot, segmentation_config: SegmentationConfig):
    """The CT and every mask cropped along the patient's head-feet axis to landmark-defined
    bounds from the TotalSegmentator masks (courses/<key>/crops/<region>/ct.nii.gz and
    masks/<source>/...), per configured region (pelvis, thorax, abdomen, head_neck, brain), with
    margins; bounds clamped to the image, and the clamping recorded. Cropped files live in
    their own tree, never beside the full-size masks. A configured region whose landmarks are
    absent fails with the missing classes named; with no region configured, every region whose
    landmarks are present is cropped."""
    import SimpleITK as sitk

    paths = course_paths(context, data_root)
    ct_path = paths.ct
    ct = sitk.ReadImage(str(ct_path))
    totalseg = {p.name[: -len(".nii.gz")]: p for p in paths.masks(TOTALSEG).glob("*.nii.gz")}
    if not totalseg:
        record_skip(context, "no TotalSegmentator masks for this course: no landmarks to crop to")
        yield from check_results(context, paths.root, not_evaluated("ct_crop", "no crop (no TotalSegmentator masks)"))
        return
    loaded = {}

    def masks_view():
        if not loaded:
            loaded.update({name: sitk.ReadImage(str(p)) for name, p in totalseg.items()})
        return loaded

    configured = list(segmentation_config.crop_regions)
    results, skipped = {}, {}
    for region in configured or sorted(REGIONS):
        try:
            results[region] = crop_bounds(region, masks_view(), ct)
        except LandmarkError as exc:
            if configured:
                raise course_failure(paths.key, exc) from exc
            skipped[region] = str(exc)

    def write(folder: Path) -> None:  # crops/<region>/ct.nii.gz and masks/<source>/: the course's own layout
        for region, bounds in results.items():
            out = folder / region
            (out / MASKS).mkdir(parents=True)
            sitk.WriteImage(crop_image(ct, bounds), str(out / CT), True)
            for source, source_dir in paths.mask_sources().items():
                (out / MASKS / source).mkdir()
                for mask_path in sorted(source_dir.glob("*.nii.gz")):
                    cropped = crop_image(sitk.ReadImage(str(mask_path)), bounds)
                    sitk.WriteImage(cropped, str(out / MASKS / source / mask_path.name), True)
            write_json_atomic(out / "bounds.json", _bounds_json(bounds))

    folder = paths.crops  # never beside the full-size masks
    replace_dir_atomic(folder, write)
    masks = paths.masks(MANUAL)
    qc = evaluate("ct_crop", {"crop_boundary": lambda: structure_boundary(ct_path, masks, folder)})
    yield MaterializeResult(
        data_version=content_version(folder),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "regions": MetadataValue.json({r: _bounds_json(b) for r, b in results.items()}),
            "regions_without_landmarks": MetadataValue.json(skipped),
            **lineage_metadata(
                context,
                source_uids={"course_key": context.partition_key},
                input_sha256={"ct.nii.gz": sha256_file(ct_path)},
            ),
        },
    )


def _bounds_json(bounds) -> dict:
    return {
        "region": bounds.region,
        "z_min_mm": round(float(bounds.z_min_mm), 3),
        "z_max_mm": round(float(bounds.z_max_mm), 3),
        "index_range": [int(i) for i in bounds.index_range],
        "clamped": list(bounds.clamped),
    }
