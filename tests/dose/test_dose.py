"""RTDOSE in Gy with DoseGridScaling applied once, and the rules of a course's total dose."""

import dataclasses
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from rt_resources.dose.plan import read_plan
from rt_resources.dose.rtdose import DoseError, read_rtdose
from rt_resources.dose.total import total_dose
from rt_resources.synthetic import make_phantom, write_patient
from tests.helpers import SMALL


def files(course, name_part):
    return sorted(f.path for f in course.files if name_part in f.path.name)


def grid_points(image):
    size = image.GetSize()
    idx = np.stack(np.meshgrid(*[np.arange(n) for n in size], indexing="ij"), -1).reshape(-1, 3)
    pts = np.array([image.TransformIndexToPhysicalPoint([int(v) for v in i]) for i in idx[::37]])
    return idx[::37], pts


def test_scaling_applied_exactly_once(drop):
    (course,) = write_patient(drop, 0, SMALL).courses
    path = files(course, "RTDOSE")[0]
    dose = read_rtdose(path)
    ds = pydicom.dcmread(path)
    assert float(ds.DoseGridScaling) != 1.0
    expected_max = ds.pixel_array.max() * float(ds.DoseGridScaling)
    assert dose.max_gy == pytest.approx(expected_max, rel=1e-9)
    assert 50 < dose.max_gy < 70  # 60 Gy prescription, not 60 * scaling or 60 / scaling
    # and equal to the analytic dose at the grid points
    phantom = make_phantom(SMALL)
    idx, pts = grid_points(dose.image)
    arr = sitk.GetArrayViewFromImage(dose.image)
    got = np.array([arr[k, j, i] for i, j, k in idx])
    np.testing.assert_allclose(got, phantom.dose_gy(pts[:, 0], pts[:, 1], pts[:, 2], 60.0), atol=2e-3)


def test_relative_dose_is_refused(drop, tmp_path):
    (course,) = write_patient(drop, 0, SMALL).courses
    ds = pydicom.dcmread(files(course, "RTDOSE")[0])
    ds.DoseUnits = "RELATIVE"
    ds.save_as(tmp_path / "rel.dcm", enforce_file_format=True)
    with pytest.raises(DoseError, match="RELATIVE"):
        read_rtdose(tmp_path / "rel.dcm")


def _load(course):
    plans = {p.sop_instance_uid: p for p in (read_plan(f) for f in files(course, "RTPLAN"))}
    doses = [read_rtdose(f) for f in files(course, "RTDOSE")]
    return plans, doses


def test_primary_plus_boost_are_summed_with_prescriptions(drop):
    (course,) = write_patient(drop, 0, dataclasses.replace(SMALL, boost=True)).courses
    plans, doses = _load(course)
    total = total_dose(doses, plans, course.frame_of_reference_uid)
    assert "2 plans" in total.decision and "common grid" in total.decision
    assert total.prescription_gy == pytest.approx(70.0)
    arr = sitk.GetArrayViewFromImage(total.image)
    assert arr.max() == pytest.approx(70.0, abs=0.05)
    assert all(c["used"] for c in total.components)


def test_beam_doses_sum_to_the_plan_dose(tmp_path):
    plan_course = write_patient(tmp_path / "a", 0, SMALL).courses[0]
    beam_course = write_patient(tmp_path / "b", 0, dataclasses.replace(SMALL, beam_doses=True)).courses[0]
    plans, doses = _load(beam_course)
    assert {d.summation_type for d in doses} == {"BEAM"} and len(doses) == 4
    total = total_dose(doses, plans, beam_course.frame_of_reference_uid)
    assert "4 BEAM doses" in total.decision
    reference = read_rtdose(files(plan_course, "RTDOSE")[0]).image
    np.testing.assert_allclose(
        sitk.GetArrayViewFromImage(total.image), sitk.GetArrayViewFromImage(reference), atol=1e-3
    )


def test_other_frame_of_reference_is_never_summed(drop):
    (course,) = write_patient(drop, 0, dataclasses.replace(SMALL, boost=True)).courses
    plans, doses = _load(course)
    doses[1].for_uid = "1.2.3.4"
    total = total_dose(doses, plans, course.frame_of_reference_uid)
    refused = [c for c in total.components if not c["used"]]
    assert len(refused) == 1 and "never summed" in refused[0]["why"]
    assert "2 plans" not in total.decision


def test_plan_sum_dose_is_used_as_is(drop):
    (course,) = write_patient(drop, 0, dataclasses.replace(SMALL, boost=True)).courses
    plans, doses = _load(course)
    doses[0].summation_type = "MULTI_PLAN"
    doses[0].ref_plan_uids = list(plans)
    total = total_dose(doses, plans, course.frame_of_reference_uid)
    assert total.decision == "MULTI_PLAN dose used as is"
    assert total.image is doses[0].image
    assert total.prescription_gy == pytest.approx(70.0)


def test_prescription_falls_back_to_fraction_group(drop, tmp_path):
    (course,) = write_patient(drop, 0, SMALL).courses
    ds = pydicom.dcmread(files(course, "RTPLAN")[0])
    del ds.DoseReferenceSequence
    ds.save_as(tmp_path / "plan.dcm", enforce_file_format=True)
    plan = read_plan(tmp_path / "plan.dcm")
    assert plan.prescription_gy == pytest.approx(60.0)
    assert "BeamDose" in plan.prescription_source
    assert read_plan(files(course, "RTPLAN")[0]).prescription_source.startswith("DoseReferenceSequence")


def _grid(value: float, uid: str, plans: list[str], kind: str = "PLAN", origin=(0.0, 0.0, 0.0), spacing=2.5, beam=None):
    import SimpleITK as sitk

    from rt_resources.dose.rtdose import DoseGrid

    image = sitk.Image([20, 16, 12], sitk.sitkFloat64)
    image.SetOrigin(origin)
    image.SetSpacing([spacing] * 3)
    image += value
    return DoseGrid(image, uid, kind, "PHYSICAL", "1.2.3", plans, [beam] if beam else [], Path(f"{uid}.dcm"))


def test_treatment_phases_lie_on_the_total_grid_and_sum_to_it():
    """Each summed plan's dose is kept as a phase on the total's grid (for EQD2): on plans with
    different grids the phases add up to the total exactly; one plan is its own phase; a plan-sum
    dose, or a dose referencing two plans, has none and says why."""
    import numpy as np
    import SimpleITK as sitk

    from rt_resources.dose.plan import PlanInfo
    from rt_resources.dose.total import same_grid, total_dose

    plans = {u: PlanInfo(u, "1.2.3", 10.0, 5, "test") for u in ("p1", "p2")}
    primary = _grid(50.0, "d1", ["p1"])
    boost = _grid(20.0, "d2", ["p2"], origin=(7.3, -4.1, 2.0), spacing=2.0)
    total = total_dose([primary, boost], plans, "1.2.3")
    assert [uid for uid, _ in total.phases] == ["p1", "p2"] and total.phases_reason == ""
    assert all(same_grid(image, total.image) for _, image in total.phases)
    summed = sum(sitk.GetArrayFromImage(image) for _, image in total.phases)
    assert np.array_equal(summed, sitk.GetArrayFromImage(total.image))

    single = total_dose([primary], plans, "1.2.3")
    assert len(single.phases) == 1 and single.phases[0][1] is single.image

    plan_sum = total_dose([_grid(70.0, "d3", ["p1", "p2"], kind="MULTI_PLAN")], plans, "1.2.3")
    assert plan_sum.image is not None and plan_sum.phases == [] and "MULTI_PLAN" in plan_sum.phases_reason
    mislabelled = total_dose([_grid(70.0, "d4", ["p1", "p2"])], plans, "1.2.3")  # a PLAN dose of two plans
    assert mislabelled.phases == [] and "references 2 plans" in mislabelled.phases_reason


def test_beam_doses_on_different_grids_do_not_break_the_total():
    """Regression: the used/unused bookkeeping compared BEAM doses with ==, which compares their
    images and raised on beams of different grids."""
    from rt_resources.dose.plan import PlanInfo
    from rt_resources.dose.total import total_dose

    plans = {"p1": PlanInfo("p1", "1.2.3", 10.0, 5, "test", beam_numbers=[1, 2])}
    beams = [_grid(4.0, "b1", ["p1"], kind="BEAM", beam=1), _grid(6.0, "b2", ["p1"], "BEAM", (5.0, 0, 0), 2.0, 2)]
    total = total_dose(beams, plans, "1.2.3")
    assert total.image is not None and len(total.phases) == 1
    assert all(c["used"] for c in total.components)
