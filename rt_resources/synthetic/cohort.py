"""Assemble courses, patients and cohorts from the per-modality writers.

Layout (names never come from tag values such as PatientID)::

    out_dir/patient_{index:03d}/course_{n}/CT/CT_0001.dcm ...
                                          RTSTRUCT.dcm
                                          RTPLAN_primary.dcm
                                          RTDOSE_primary.dcm  (or RTDOSE_primary_beam1.dcm ...)
                                          RTPLAN_boost.dcm, RTDOSE_boost.dcm  (boost=True)
                                          MR/MR_0001.dcm ..., REG.dcm  (mr=True)
                                          PT/PT_0001.dcm ...  (pet set: PET/CT, no REG)
"""

from __future__ import annotations

from pathlib import Path

from .common import CourseContext, UidFactory
from .ct import ct_grid, write_ct
from .mr import mr_from_ct_matrix, write_mr
from .options import DEFAULT_OPTIONS, SynthCourse, SynthFile, SynthOptions, SynthPatient
from .pet import write_pet
from .phantom import (
    BOOST_FRACTIONS,
    BOOST_RX_GY,
    PRIMARY_FRACTIONS,
    PRIMARY_RX_GY,
    make_phantom,
)
from .reg import write_reg
from .rtdose import dose_grid, dose_scaling, quantise, split_beams, write_rtdose
from .rtplan import PlanSpec, write_rtplan
from .rtstruct import write_rtstruct

PRIMARY = PlanSpec("primary", "PRIMARY", PRIMARY_RX_GY, PRIMARY_FRACTIONS, "PTV", series_number=3)
BOOST = PlanSpec("boost", "BOOST", BOOST_RX_GY, BOOST_FRACTIONS, "PTV_boost", series_number=5)


def course_context(
    out_dir: Path,
    index: int,
    options: SynthOptions = DEFAULT_OPTIONS,
    course_number: int = 1,
    patient_id: str | None = None,
    patient_name: str | None = None,
) -> CourseContext:
    """The shared state of one course (UIDs, phantom, CT grid, folder); writes nothing.

    Useful in tests to get the analytic phantom and grids of a written course:
    ``course_context(out, i, opts, n).phantom.hu(x, y, z)``.
    """
    uid = UidFactory(options.seed, index)
    phantom = make_phantom(options, course_number, index)
    return CourseContext(
        options=options,
        uid=uid,
        index=index,
        course_number=course_number,
        patient_id=patient_id if patient_id is not None else f"SYNTH{index:03d}",
        patient_name=patient_name if patient_name is not None else f"Synthetic^Patient{index:03d}",
        study_uid=uid(f"course{course_number}/study"),
        frame_of_reference_uid=uid(f"course{course_number}/frame_of_reference"),
        phantom=phantom,
        ct_grid=ct_grid(options, phantom),
        folder=Path(out_dir) / f"patient_{index:03d}" / f"course_{course_number}",
    )


def _write_course(ctx: CourseContext) -> SynthCourse:
    opts = ctx.options
    files: list[SynthFile] = []
    ct = write_ct(ctx, ctx.folder / "CT")
    files += ct.files

    rois = ctx.phantom.structures()
    if opts.boost:
        rois["PTV_boost"] = ctx.phantom.boost
    struct = write_rtstruct(ctx, ct, rois, ctx.folder / "RTSTRUCT.dcm")
    files.append(struct.file)

    specs = [PRIMARY, BOOST] if opts.boost else [PRIMARY]
    grid = dose_grid(ctx)
    x, y, z = grid.points()
    plan_uids: list[str] = []
    dose_uids: list[str] = []
    prescriptions: dict[str, float] = {}
    dose_plan: dict[str, str] = {}
    for spec in specs:
        target = ctx.phantom.ptv if spec.target_roi == "PTV" else ctx.phantom.boost
        plan = write_rtplan(
            ctx,
            spec,
            struct.sop_instance_uid,
            struct.roi_numbers[spec.target_roi],
            target.centre,
            ctx.folder / f"RTPLAN_{spec.role}.dcm",
        )
        files.append(plan.file)
        plan_uids.append(plan.sop_instance_uid)
        prescriptions[plan.sop_instance_uid] = spec.prescription_gy

        dose = ctx.phantom.dose_gy(x, y, z, spec.prescription_gy, spec.target_roi)
        scaling_text, scaling = dose_scaling(float(dose.max()))
        stored = quantise(dose, scaling)
        if opts.beam_doses and spec is PRIMARY:
            parts = split_beams(stored, len(plan.beam_numbers))
            outputs = [(f"{spec.role}_beam{b}", part, b) for b, part in zip(plan.beam_numbers, parts, strict=True)]
        else:
            outputs = [(spec.role, stored, None)]
        for role, values, beam in outputs:
            written = write_rtdose(
                ctx,
                role=role,
                grid=grid,
                stored=values,
                scaling_text=scaling_text,
                plan_uid=plan.sop_instance_uid,
                beam_number=beam,
                series_number=spec.series_number + 1,
                path=ctx.folder / f"RTDOSE_{role}.dcm",
            )
            files.append(written)
            dose_uids.append(written.sop_instance_uid)
            dose_plan[written.sop_instance_uid] = plan.sop_instance_uid

    mr_fields: dict = {}
    if opts.mr:
        mr = write_mr(ctx, ctx.folder / "MR")
        reg = write_reg(ctx, ct, mr, ctx.folder / "REG.dcm")
        files += mr.files
        files.append(reg)
        mr_fields = {
            "mr_series_uid": mr.series_uid,
            "mr_frame_of_reference_uid": mr.frame_of_reference_uid,
            "reg_uid": reg.sop_instance_uid,
            "mr_from_ct": tuple(float(v) for v in mr_from_ct_matrix().reshape(16)),
        }

    pet_fields: dict = {}
    if opts.pet:
        pet = write_pet(ctx, ctx.folder / "PT")
        files += pet.files
        pet_fields = {
            "pet_series_uid": pet.series_uid,
            "pet_vendor": pet.vendor,
            "pet_decayed_dose_bq": pet.decayed_dose_bq,
        }

    return SynthCourse(
        patient_id=ctx.patient_id,
        study_uid=ctx.study_uid,
        ct_series_uid=ct.series_uid,
        frame_of_reference_uid=ctx.frame_of_reference_uid,
        struct_uid=struct.sop_instance_uid,
        plan_uids=plan_uids,
        dose_uids=dose_uids,
        files=files,
        roi_names=list(rois),
        prescription_gy=prescriptions,
        dose_plan_uids=dose_plan,
        folder=ctx.folder,
        course_number=ctx.course_number,
        **mr_fields,
        **pet_fields,
    )


def write_patient(
    out_dir: Path,
    index: int,
    options: SynthOptions = DEFAULT_OPTIONS,
    patient_id: str | None = None,
    patient_name: str | None = None,
) -> SynthPatient:
    """Write one synthetic patient under ``out_dir / f"patient_{index:03d}"``.

    Deterministic: the same arguments give byte-identical files. UIDs derive from
    (options.seed, index, role) only. Folder and file names never derive from
    ``patient_id``/``patient_name``, which are only written into the tags.
    """
    if not isinstance(index, int) or index < 0:
        raise ValueError("index must be a non-negative int")
    out_dir = Path(out_dir)
    n_courses = 2 if options.second_course else 1
    courses = [
        _write_course(course_context(out_dir, index, options, n, patient_id, patient_name))
        for n in range(1, n_courses + 1)
    ]
    return SynthPatient(
        patient_id=courses[0].patient_id,
        folder=out_dir / f"patient_{index:03d}",
        courses=courses,
    )


def write_cohort(out_dir: Path, n_patients: int, options: SynthOptions = DEFAULT_OPTIONS) -> list[SynthPatient]:
    """Write patients 0 .. n_patients-1 with default IDs/names under ``out_dir``."""
    return [write_patient(out_dir, i, options) for i in range(n_patients)]
