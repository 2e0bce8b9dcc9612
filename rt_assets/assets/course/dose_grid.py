from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.course_inputs import open_course
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import log_warning, private, scrub_value
from rt_assets.qc import check_results, check_specs, evaluate, not_evaluated
from rt_resources.dicom.sop_classes import Kind
from rt_resources.dose.course import course_total_dose, dose_info, phase_file
from rt_resources.fileio import replace_dir_atomic, write_atomic, write_json_atomic
from rt_resources.ingest.refusals import refused_entry, write_refusals
from rt_resources.provenance import digest_of
from rt_resources.qc.dose import dose_units
from rt_resources.resources import DataRoot


@asset(
    partitions_def=course_partitions,
    deps=["course_manifest"],
    code_version="4",
    kinds={"nifti"},
    check_specs=check_specs("dose_grid"),
)
@private
def dose_grid(context: AssetExecutionContext, data_root: DataRoot):
    """The course's total dose in Gy (courses/<key>/dose.nii.gz, dose.json): DoseGridScaling
    applied exactly once; a plan-sum dose as is, BEAM doses of a plan summed, primary and boost
    plans summed on a common grid, doses on another frame of reference never summed. The
    decision and the prescription are in the metadata. A course without a usable dose (no
    RTDOSE, or a RELATIVE one) materializes with has_dose = false and the reason (dose.json
    says it too): the course's other stages go on, the DVH is skipped and says why. Each summed
    plan's own dose (a treatment phase, on the total's grid) is kept in dose_phases/ for EQD2."""
    import SimpleITK as sitk

    course = open_course(context, data_root)
    paths, manifest = course.paths, course.manifest
    total, plans, inputs = course_total_dose(course.sources(Kind.RTPLAN), course.sources(Kind.RTDOSE), manifest)
    info = scrub_value(dose_info(total, plans))  # dose.json names files by id: no path, no label
    components = MetadataValue.json(info["components"])
    by_uid = {f.sop_instance_uid: f for f in manifest.of_kind(Kind.RTDOSE)}
    unused_plans = [f for f in manifest.of_kind(Kind.RTPLAN) if f.sop_instance_uid not in total.plans_summed]
    write_refusals(  # every RTDOSE and RTPLAN the total does not use, with the reason, for the ingest report
        paths.root,
        "dose_grid",
        [
            refused_entry(by_uid[c["sop_instance_uid"]], c["why"])
            for c in info["components"]
            if not c.get("used") and c.get("sop_instance_uid") in by_uid
        ]
        + [refused_entry(f, "no dose of this plan is used for the course's total dose") for f in unused_plans],
    )
    lineage = lineage_metadata(
        context,
        source_uids={"rtdose_uids": manifest.rtdose_uids, "rtplan_uids": total.plans_summed},
        input_sha256={"rtdose_rtplan_files": digest_of(f.sha256 for f in inputs)},
    )
    replace_dir_atomic(paths.dose_phases, lambda tmp: _write_phases(total.phases, tmp))
    if total.image is None:
        paths.dose.unlink(missing_ok=True)  # never leave an earlier dose for the DVH
        write_json_atomic(paths.dose_info, info)
        log_warning(context, f"course {course.key}: no dose: {total.decision}")
        if manifest.rtdose_uids:  # an RTDOSE that cannot be used (RELATIVE, ...): an error to look at
            qc = evaluate("dose_grid", {"dose_units": lambda: dose_units(paths.root)})
        else:
            qc = not_evaluated("dose_grid", "the course has no RTDOSE")
        return MaterializeResult(
            data_version=content_version(paths.dose_info),
            metadata={"has_dose": False, "decision": total.decision, "components": components, **lineage},
            check_results=check_results(context, paths.root, qc),
        )
    write_json_atomic(paths.dose_info, info)
    image = sitk.Cast(total.image, sitk.sitkFloat32)
    path = write_atomic(paths.dose, lambda tmp: sitk.WriteImage(image, str(tmp), True))
    qc = evaluate("dose_grid", {"dose_units": lambda: dose_units(paths.root)})
    return MaterializeResult(
        data_version=content_version(path, paths.dose_info),
        check_results=check_results(context, paths.root, qc),
        metadata={
            "path": MetadataValue.path(str(path)),
            "has_dose": True,
            "decision": total.decision,
            "prescription_gy": total.prescription_gy if total.prescription_gy is not None else "unknown",
            "max_gy": float(sitk.GetArrayViewFromImage(total.image).max()),
            "size_voxels": MetadataValue.json(list(total.image.GetSize())),
            "spacing_mm": MetadataValue.json([round(v, 4) for v in total.image.GetSpacing()]),
            "components": components,
            "phases": len(total.phases) or f"none: {total.phases_reason}",
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in total.notes) or "none"),
            **lineage,
        },
    )


def _write_phases(phases: list, folder) -> None:
    """Each phase's physical dose (Gy, float32) as dose_phases/phase-<n>.nii.gz (see dose.json)."""
    import SimpleITK as sitk

    folder.mkdir(parents=True, exist_ok=True)
    for i, (_, image) in enumerate(phases):
        sitk.WriteImage(sitk.Cast(image, sitk.sitkFloat32), str(folder / phase_file(i)), True)
