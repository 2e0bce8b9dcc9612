"""A course's total dose from its RTDOSE objects, with the decision and its reason.

Rules, in order:

1. A dose on another frame of reference than the planning CT is never summed.
2. A plan-sum dose (DoseSummationType MULTI_PLAN, "PLAN_SUM" in some exports) is the total
   as is.
3. Per plan: its PLAN dose; else the sum of its BEAM doses (on the first beam dose's grid);
   else its FRACTION dose times the planned fractions.
4. The per-plan doses of primary and boost plans are summed on a common grid: the union of
   their extents, at the finest spacing of each axis, trilinear interpolation, 0 Gy outside
   a grid.

The prescription is the sum of the summed plans' prescriptions (unknown if any is unknown).

The per-plan doses are kept as the course's treatment phases (:attr:`TotalDose.phases`, each on
the total's grid), for radiobiology that must convert each phase with its own dose per fraction
(:mod:`rt_resources.dose.eqd2`). A plan-sum dose has no phases: its plans cannot be separated.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from rt_resources.dose.plan import PlanInfo
from rt_resources.dose.rtdose import DoseGrid

PLAN_SUM_TYPES = {"MULTI_PLAN", "PLAN_SUM"}


@dataclass
class TotalDose:
    image: object | None  #: SimpleITK.Image in Gy, or None when no dose is usable
    decision: str
    prescription_gy: float | None
    plans_summed: list[str] = field(default_factory=list)
    components: list[dict] = field(default_factory=list)  #: every RTDOSE, used or not, and why
    notes: list[str] = field(default_factory=list)
    #: (plan SOP Instance UID, that plan's dose on the total's grid), one per summed plan; empty for a
    #: plan-sum dose (its phases cannot be separated: ``phases_reason`` says so)
    phases: list[tuple[str, object]] = field(default_factory=list)
    phases_reason: str = ""


def _component(dose: DoseGrid, used: bool, why: str) -> dict:
    return {
        "sop_instance_uid": dose.sop_instance_uid,
        "summation_type": dose.summation_type,
        "plan_uids": dose.ref_plan_uids,
        "max_gy": round(dose.max_gy, 4),
        "used": used,
        "why": why,
    }


def same_grid(a, b, tol: float = 1e-4) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=tol)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    )


def resample_onto(image, reference):
    """``image`` on ``reference``'s grid: trilinear, 0 Gy outside ``image``."""
    import SimpleITK as sitk

    if same_grid(image, reference):
        return image
    return sitk.Resample(image, reference, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat64)


def common_grid(images: list):
    """A grid covering every image: first image's axes, union extent, finest spacing per axis."""
    import SimpleITK as sitk

    first = images[0]
    direction = np.asarray(first.GetDirection()).reshape(3, 3)
    spacing = np.min([im.GetSpacing() for im in images], axis=0)
    lo, hi = np.full(3, np.inf), np.full(3, -np.inf)
    for im in images:
        size = np.asarray(im.GetSize()) - 1
        for corner in np.array(np.meshgrid(*[[0, s] for s in size], indexing="ij")).reshape(3, -1).T:
            p = np.asarray(im.TransformContinuousIndexToPhysicalPoint(corner.astype(float)))
            local = direction.T @ p
            lo, hi = np.minimum(lo, local), np.maximum(hi, local)
    size = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
    grid = sitk.Image([int(s) for s in size], sitk.sitkFloat64)
    grid.SetSpacing(tuple(float(s) for s in spacing))
    grid.SetDirection(first.GetDirection())
    grid.SetOrigin(tuple(float(v) for v in direction @ lo))
    return grid


def _add(images: list, reference):
    import SimpleITK as sitk

    total = sitk.GetArrayFromImage(resample_onto(images[0], reference)).astype(np.float64)
    for im in images[1:]:
        total += sitk.GetArrayFromImage(resample_onto(im, reference))  # a copy: a view of a temporary dangles
    out = sitk.GetImageFromArray(total)
    out.CopyInformation(reference)
    return out


def total_dose(doses: list[DoseGrid], plans: dict[str, PlanInfo], course_for_uid: str) -> TotalDose:
    """Combine a course's RTDOSEs (see module docstring); every dose is accounted for."""
    components: list[dict] = []
    notes: list[str] = []
    usable = []
    for d in sorted(doses, key=lambda d: d.sop_instance_uid):
        if d.for_uid and course_for_uid and d.for_uid != course_for_uid:
            components.append(
                _component(d, False, f"frame of reference {d.for_uid} differs from the planning CT's: never summed")
            )
        else:
            usable.append(d)
    if not usable:
        return TotalDose(None, "no usable RTDOSE in the course", None, [], components, notes)

    plan_sums = [d for d in usable if d.summation_type in PLAN_SUM_TYPES]
    if plan_sums:
        chosen = plan_sums[0]
        components.append(_component(chosen, True, "plan-sum dose: used as the total as is"))
        components += [_component(d, False, "superseded by the plan-sum dose") for d in usable if d is not chosen]
        rx, rx_note = _prescription(chosen.ref_plan_uids, plans)
        notes += rx_note
        return TotalDose(
            chosen.image,
            f"{chosen.summation_type} dose used as is",
            rx,
            chosen.ref_plan_uids,
            components,
            notes,
            phases_reason=f"the course's dose is a {chosen.summation_type} dose: its plans' doses cannot be separated",
        )

    by_plan: dict[str, list[DoseGrid]] = {}
    for d in usable:
        by_plan.setdefault(d.ref_plan_uids[0] if d.ref_plan_uids else "", []).append(d)
    per_plan = []  # (plan uid, image, how)
    for plan_uid, group in sorted(by_plan.items()):
        plan = plans.get(plan_uid)
        # plans are named by SOP Instance UID: their labels are free text (planners write names there)
        label = f"plan {plan_uid}" if plan else f"plan {plan_uid or '(unreferenced)'}"
        plan_doses = [d for d in group if d.summation_type == "PLAN"]
        beam_doses = [d for d in group if d.summation_type == "BEAM"]
        fraction_doses = [d for d in group if d.summation_type == "FRACTION"]
        if plan_doses:
            components.append(_component(plan_doses[0], True, f"PLAN dose of {label}"))
            components += [
                _component(d, False, f"{label} already has a PLAN dose") for d in group if d is not plan_doses[0]
            ]
            per_plan.append((plan_uid, plan_doses[0].image, f"PLAN dose of {label}"))
        elif beam_doses:
            components += [_component(d, True, f"BEAM dose of {label}, summed") for d in beam_doses]
            components += [  # by identity: == would compare the images (and fail on other grids)
                _component(d, False, f"{label} uses its BEAM doses")
                for d in group
                if all(d is not b for b in beam_doses)
            ]
            image = _add([d.image for d in beam_doses], beam_doses[0].image)
            covered = sorted({b for d in beam_doses for b in d.ref_beam_numbers})
            if plan and plan.beam_numbers and covered and set(plan.beam_numbers) - set(covered):
                missing = sorted(set(plan.beam_numbers) - set(covered))
                notes.append(f"{label}: BEAM doses for beams {missing} are missing; its dose is partial")
            per_plan.append((plan_uid, image, f"{len(beam_doses)} BEAM doses of {label} summed"))
        elif fraction_doses and plan and plan.fractions:
            import SimpleITK as sitk

            d = fraction_doses[0]
            components.append(_component(d, True, f"FRACTION dose of {label} x {plan.fractions} fractions"))
            per_plan.append(
                (
                    plan_uid,
                    sitk.Multiply(d.image, float(plan.fractions)),
                    f"FRACTION dose of {label} x {plan.fractions}",
                )
            )
        else:
            components += [
                _component(d, False, f"DoseSummationType {d.summation_type or 'missing'} of {label} is not supported")
                for d in group
            ]
    if not per_plan:
        return TotalDose(None, "no RTDOSE of a supported summation type", None, [], components, notes)

    plan_uids = [p for p, _, _ in per_plan]
    rx, rx_note = _prescription(plan_uids, plans)
    summed = sorted((d for d in usable if len(d.ref_plan_uids) > 1), key=lambda d: d.sop_instance_uid)
    phases_reason = (
        f"RTDOSE {summed[0].sop_instance_uid} references {len(summed[0].ref_plan_uids)} plans: "
        "a sum whose phases cannot be separated"
        if summed
        else ""
    )
    notes += rx_note
    if len(per_plan) == 1:
        uid, image, how = per_plan[0]
        phases = [] if phases_reason else [(uid, image)]
        return TotalDose(image, how, rx, plan_uids, components, notes, phases=phases, phases_reason=phases_reason)
    grid = common_grid([im for _, im, _ in per_plan])
    decision = f"{len(per_plan)} plans on the planning CT summed on a common grid: " + "; ".join(
        h for _, _, h in per_plan
    )
    phases = [(uid, resample_onto(im, grid)) for uid, im, _ in per_plan]
    total = _add([im for _, im in phases], grid)
    if phases_reason:
        phases = []
    return TotalDose(total, decision, rx, plan_uids, components, notes, phases=phases, phases_reason=phases_reason)


def _prescription(plan_uids: list[str], plans: dict[str, PlanInfo]) -> tuple[float | None, list[str]]:
    known = [plans[u] for u in plan_uids if u in plans]
    if len(known) != len(plan_uids):
        return None, ["prescription unknown: a summed plan is not in the course"]
    if any(p.prescription_gy is None for p in known):
        return None, ["prescription unknown: a summed plan states none"]
    return float(sum(p.prescription_gy for p in known)), []
