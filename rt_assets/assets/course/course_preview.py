from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import course_failure, course_paths
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.course_paths import MANUAL
from rt_resources.dose.course import read_dose_info
from rt_resources.provenance import sha256_file
from rt_resources.qc.previews.montage import ct_montage_png
from rt_resources.qc.previews.render import png_markdown
from rt_resources.resources import DataRoot


@asset(
    partitions_def=course_partitions,
    deps=["ct_image", "structure_masks", "dose_grid", "totalseg_masks", "custom_structures"],
    code_version="1",
    kinds={"png"},
    # in the course run; drawn again when auto or custom structures arrive
    automation_condition=after_updates(
        required=["ct_image", "structure_masks", "dose_grid"], triggers=["totalseg_masks", "custom_structures"]
    ),
)
@private
def course_preview(context: AssetExecutionContext, data_root: DataRoot) -> MaterializeResult:
    """A picture to review the course at a glance (courses/<key>/preview/ct_montage.png, shown
    here in the metadata): axial, coronal and sagittal CT planes through the target (PTV, else
    CTV/GTV, else the dose maximum) with the manual contours (solid), auto-segmentation and
    custom structures (dashed) and the dose as a colour wash. The DVH plot is on the dvh asset."""
    paths = course_paths(context, data_root)
    ct_path, dose_path = paths.ct, paths.dose
    if not ct_path.exists():
        raise course_failure(paths.key, f"no {ct_path.name}, materialize ct_image first")
    auto = {name: p for name, p in paths.mask_sources().items() if name != MANUAL}
    rx = read_dose_info(paths.root).get("prescription_gy") if paths.dose_info.exists() else None
    out = ct_montage_png(
        ct_path,
        paths.preview("ct_montage.png"),
        manual_masks_dir=paths.masks(MANUAL),
        auto_masks_dirs=auto,
        dose_path=dose_path if dose_path.exists() else None,
        prescription_gy=rx,
    )
    return MaterializeResult(
        data_version=content_version(out["path"]),
        metadata={
            "preview": MetadataValue.md(png_markdown(out["path"], alt="CT montage", max_width_px=1200)),
            "path": MetadataValue.path(out["path"]),
            "centre_mm": MetadataValue.json([round(v, 1) for v in out["centre_mm"]]),
            "centre_from": out["centre_from"],
            "n_contours": out["n_contours"],
            "notes": MetadataValue.json(out.get("notes", [])),
            **lineage_metadata(
                context,
                source_uids={},
                input_sha256={
                    "ct.nii.gz": sha256_file(ct_path),
                    "dose.nii.gz": sha256_file(dose_path) if dose_path.exists() else "",
                },
            ),
        },
    )
