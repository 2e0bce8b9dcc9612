from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.course_inputs import open_course
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.qc import check_results, check_specs, evaluate
from rt_resources.course_paths import MANUAL
from rt_resources.dicom.sop_classes import Kind
from rt_resources.ingest.refusals import refused_entry, write_refusals
from rt_resources.pet.course import SUV_BW_ON_CT, course_pet_images
from rt_resources.provenance import digest_of
from rt_resources.qc.pet import pet_suv
from rt_resources.qc.previews.montage import ct_montage_png
from rt_resources.qc.previews.render import png_markdown
from rt_resources.resources import DataRoot


@asset(
    partitions_def=course_partitions,
    deps=["course_manifest", "ct_image", "structure_masks"],
    code_version="1",
    kinds={"nifti"},
    check_specs=check_specs("pet_images"),
)
@private
def pet_images(context: AssetExecutionContext, data_root: DataRoot):
    """Every PET series of the course (a PET/CT in the planning CT's frame of reference, or one
    registered to it by a REG) in SUVbw on its own grid and on the CT grid
    (courses/<key>/pet/<label>/suv_bw.nii.gz, suv_bw_on_ct.nii.gz), with the activity
    concentration in Bq/ml where the headers give it. SUV follows the QIBA vendor-neutral
    pseudo-code (rt_resources/pet/suv.py): the factor per slice, its inputs and the branch taken
    are in info.json and in the `series` metadata. A series without SUV (no PatientWeight,
    DecayCorrection NONE, ...) keeps only its activity concentration and the pet_suv check says
    why; a series that cannot be used at all is in the ledger (ingest_report) with the reason. A
    course without PET materializes with n_series = 0. Each PET with SUV gets a PET/CT fusion
    (preview/<label>_fusion.png: SUV over the CT with the manual contours), shown here."""
    course = open_course(context, data_root)
    paths, manifest = course.paths, course.manifest
    records, refused = course_pet_images(manifest, paths)
    unused = [f for f in manifest.of_kind(Kind.PT) if f.series_uid in refused]
    write_refusals(paths.root, "pet_images", [refused_entry(f, refused[f.series_uid]) for f in unused])
    qc = evaluate("pet_images", {"pet_suv": lambda: pet_suv(records, refused)})
    previews = {}
    for r in records:
        fused = paths.pet / r["label"] / SUV_BW_ON_CT
        if fused.exists():
            out = ct_montage_png(
                paths.ct,
                paths.preview(f"{r['label']}_fusion.png"),
                manual_masks_dir=paths.masks(MANUAL),
                dose_path=fused,
                wash_label="SUVbw (g/ml)",
            )
            previews[r["label"]] = out["path"]
    files = manifest.of_kind(Kind.PT, Kind.REG)
    summary = [
        {k: r[k] for k in ("label", "series_uid", "units", "has_suv", "suv_reason", "registration", "spacing_mm")}
        | {"suv_bw_factor": r["scale"]["slices"][0]["suv_bw_factor"] if r["has_suv"] else None}
        | {"branch": r["scale"]["branch"], "inputs": r["scale"]["inputs"]}
        for r in records
    ]
    return MaterializeResult(
        data_version=content_version(paths.pet),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(paths.pet)),
            "n_series": len(records),
            "n_with_suv": sum(r["has_suv"] for r in records),
            **{
                f"preview_{label}": MetadataValue.md(png_markdown(path, alt=f"{label} PET/CT", max_width_px=1200))
                for label, path in previews.items()
            },
            "series": MetadataValue.json(summary),
            "refused": MetadataValue.json(refused),
            **lineage_metadata(
                context,
                source_uids={
                    "pet_series_uids": [r["series_uid"] for r in records],
                    "registration_uids": manifest.registration_uids,
                },
                input_sha256={"pet_reg_files": digest_of(f.sha256 for f in files)},
            ),
        },
    )
