"""Tests of the analytic DVH test courses (real files in tmp_path, closed forms vs Monte Carlo)."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, RTDoseStorage, RTPlanStorage, RTStructureSetStorage
from scipy.interpolate import RegularGridInterpolator

from rt_resources.synthetic import ORIENTATIONS, SynthOptions, course_context
from rt_resources.synthetic.analytic import (
    GRADIENT_A_GY,
    GRADIENT_B_GY_PER_MM,
    ROI_ORDER,
    UNIFORM_GY,
    AnalyticCourse,
    write_analytic_course,
)

A, B = GRADIENT_A_GY, GRADIENT_B_GY_PER_MM
H = 2.0  # default CT slice spacing
N_MC = 200_000
SOP_CLASSES = {
    "CT": CTImageStorage,
    "RTSTRUCT": RTStructureSetStorage,
    "RTPLAN": RTPlanStorage,
    "RTDOSE": RTDoseStorage,
}


@pytest.fixture(scope="module")
def gradient(tmp_path_factory: pytest.TempPathFactory) -> AnalyticCourse:
    return write_analytic_course(tmp_path_factory.mktemp("gradient"), "gradient")


@pytest.fixture(scope="module")
def gradient_ffs(tmp_path_factory: pytest.TempPathFactory) -> AnalyticCourse:
    return write_analytic_course(tmp_path_factory.mktemp("gradient_ffs"), "gradient", patient_position="FFS")


@pytest.fixture(scope="module")
def uniform(tmp_path_factory: pytest.TempPathFactory) -> AnalyticCourse:
    return write_analytic_course(tmp_path_factory.mktemp("uniform"), "uniform")


def _read(course: AnalyticCourse, modality: str) -> list[pydicom.Dataset]:
    out = []
    for path in course.files:
        ds = pydicom.dcmread(path)
        if ds.Modality == modality:
            out.append(ds)
    return out


def _roi_contours(struct: pydicom.Dataset) -> dict[str, list[np.ndarray]]:
    """ROI name -> list of (n, 3) contour point arrays read from the RTSTRUCT."""
    names = {int(r.ROINumber): str(r.ROIName) for r in struct.StructureSetROISequence}
    out: dict[str, list[np.ndarray]] = {name: [] for name in names.values()}
    for roi in struct.ROIContourSequence:
        for contour in getattr(roi, "ContourSequence", []):
            out[names[int(roi.ReferencedROINumber)]].append(
                np.asarray([float(v) for v in contour.ContourData]).reshape(-1, 3)
            )
    return out


def _dose_points(ds: pydicom.Dataset) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patient x, y, z (mm) of every RTDOSE voxel, computed from the file's tags only."""
    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
    dr, dc = (float(v) for v in ds.PixelSpacing)  # row spacing, column spacing
    offsets = np.asarray([float(v) for v in ds.GridFrameOffsetVector])
    k = offsets[:, None, None]
    r = np.arange(int(ds.Rows))[None, :, None] * dr
    c = np.arange(int(ds.Columns))[None, None, :] * dc
    return tuple(ipp[a] + c * row_dir[a] + r * col_dir[a] + k * normal[a] for a in range(3))  # type: ignore[return-value]


def _ct_centres(course: AnalyticCourse) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre x, y values and slice z values of the CT, read from the files."""
    cts = _read(course, "CT")
    xs, ys, zs = [], [], []
    for ds in cts:
        iop = [float(v) for v in ds.ImageOrientationPatient]
        ipp = [float(v) for v in ds.ImagePositionPatient]
        dr, dc = (float(v) for v in ds.PixelSpacing)
        xs.append(ipp[0] + np.arange(int(ds.Columns)) * dc * iop[0])
        ys.append(ipp[1] + np.arange(int(ds.Rows)) * dr * iop[4])
        zs.append(ipp[2])
    return np.unique(np.concatenate(xs)), np.unique(np.concatenate(ys)), np.asarray(sorted(zs))


# --------------------------------------------------------------------- files and links


def test_files_and_reference_chain(gradient: AnalyticCourse) -> None:
    datasets = [pydicom.dcmread(p) for p in gradient.files]
    for ds in datasets:
        assert ds.preamble is not None and ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
        assert ds.SOPClassUID == SOP_CLASSES[ds.Modality] == ds.file_meta.MediaStorageSOPClassUID
        assert ds.PatientID == gradient.patient_id
        assert ds.StudyInstanceUID == gradient.study_uid
    assert all(p.is_relative_to(gradient.folder) for p in gradient.files)
    cts = _read(gradient, "CT")
    (struct,), (plan,), (dose,) = _read(gradient, "RTSTRUCT"), _read(gradient, "RTPLAN"), _read(gradient, "RTDOSE")
    assert len(cts) == 60 and {ds.SeriesInstanceUID for ds in cts} == {gradient.ct_series_uid}
    for ds in [*cts, plan, dose]:
        assert ds.FrameOfReferenceUID == gradient.frame_of_reference_uid

    # RTDOSE -> RTPLAN -> RTSTRUCT -> CT
    assert dose.SOPInstanceUID == gradient.dose_uid
    assert dose.ReferencedRTPlanSequence[0].ReferencedSOPInstanceUID == plan.SOPInstanceUID == gradient.plan_uid
    assert dose.DoseSummationType == "PLAN" and dose.DoseUnits == "GY"
    assert float(dose.DoseGridScaling) != 1.0
    assert plan.ReferencedStructureSetSequence[0].ReferencedSOPInstanceUID == struct.SOPInstanceUID
    assert struct.SOPInstanceUID == gradient.struct_uid
    assert float(plan.DoseReferenceSequence[0].TargetPrescriptionDose) == gradient.prescription_gy == 60.0
    assert int(plan.FractionGroupSequence[0].NumberOfFractionsPlanned) == 30
    assert "FrameOfReferenceUID" not in struct
    ref_for = struct.ReferencedFrameOfReferenceSequence[0]
    assert ref_for.FrameOfReferenceUID == gradient.frame_of_reference_uid
    study = ref_for.RTReferencedStudySequence[0]
    assert study.ReferencedSOPInstanceUID == gradient.study_uid
    series = study.RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == gradient.ct_series_uid
    ct_uids = {ds.SOPInstanceUID for ds in cts}
    assert {i.ReferencedSOPInstanceUID for i in series.ContourImageSequence} == ct_uids


def test_rois_contours_and_empty_roi(gradient: AnalyticCourse) -> None:
    (struct,) = _read(gradient, "RTSTRUCT")
    assert [r.ROIName for r in struct.StructureSetROISequence] == list(ROI_ORDER)
    types = {o.ROIObservationLabel: o.RTROIInterpretedType for o in struct.RTROIObservationsSequence}
    assert types["BODY"] == "EXTERNAL"
    empty_number = gradient.roi_numbers["Empty"]
    (empty,) = [r for r in struct.ROIContourSequence if r.ReferencedROINumber == empty_number]
    assert "ContourSequence" not in empty
    assert gradient.expected["Empty"].volume_cc == 0.0 and math.isnan(gradient.expected["Empty"].mean_gy)

    _, _, ct_z = _ct_centres(gradient)
    contours = _roi_contours(struct)
    for name, polys in contours.items():
        zs = sorted(float(p[0, 2]) for p in polys)
        assert zs == sorted(gradient.contour_z[name])
        for p in polys:
            assert np.all(p[:, 2] == p[0, 2]) and np.min(np.abs(ct_z - p[0, 2])) < 1e-9
    counts = {name: len(polys) for name, polys in contours.items()}
    assert counts == {"BODY": 60, "Box": 20, "Cylinder": 30, "Sphere": 20, "SmallSphere": 4, "EdgeBox": 10, "Empty": 0}
    assert {len(p) for p in contours["Cylinder"] + contours["Sphere"] + contours["BODY"]} == {256}


def test_ct_is_water_cylinder_in_air(gradient: AnalyticCourse) -> None:
    ds = _read(gradient, "CT")[30]
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert hu[64, 64] == 0.0 and hu[0, 0] == -1000.0
    assert set(np.unique(hu)) == {0.0, -1000.0}
    # water area ~ pi R^2 (R = 126.5 mm) in pixels of 2 x 2 mm
    assert abs((hu == 0).sum() * 4.0 / (math.pi * 126.5**2) - 1) < 0.01


# ------------------------------------------------------------------------------- dose


@pytest.mark.parametrize("which", ["gradient", "gradient_ffs", "uniform"])
def test_stored_dose_equals_dose_fn(which: str, request: pytest.FixtureRequest) -> None:
    course: AnalyticCourse = request.getfixturevalue(which)
    (ds,) = _read(course, "RTDOSE")
    scaling = float(ds.DoseGridScaling)
    stored = ds.pixel_array.astype(np.float64)
    assert 2**23 < stored.max() <= 2**24 + 1
    x, y, z = _dose_points(ds)
    assert np.max(np.abs(stored * scaling - course.case.dose_fn(x, y, z))) < 1e-3

    # the dose grid covers the whole CT field (voxel extents) and does not coincide with it
    cx, cy, cz = _ct_centres(course)
    half = (cx[1] - cx[0]) / 2, (cy[1] - cy[0]) / 2, (cz[1] - cz[0]) / 2
    for axis, centres, h in zip((x, y, z), (cx, cy, cz), half, strict=True):
        assert axis.min() < centres.min() - h and axis.max() > centres.max() + h
        nearest = np.min(np.abs(np.unique(np.round(axis, 6))[:, None] - centres[None, :]), axis=1)
        assert nearest.min() > 0.1
    spacing = [float(v) for v in ds.PixelSpacing] + [float(ds.GridFrameOffsetVector[1])]
    assert spacing == [2.5, 2.5, 2.5]


def _trilinear(ds: pydicom.Dataset) -> RegularGridInterpolator:
    """Trilinear interpolator of an RTDOSE (axis-aligned orientation) in patient x, y, z."""
    x, y, z = _dose_points(ds)
    dose = ds.pixel_array.astype(np.float64) * float(ds.DoseGridScaling)  # (z, y, x) for HFS/FFS
    xs, ys, zs = x[0, 0, :], y[0, :, 0], z[:, 0, 0]
    if xs[0] > xs[-1]:
        xs, dose = xs[::-1], dose[:, :, ::-1]
    if ys[0] > ys[-1]:
        ys, dose = ys[::-1], dose[:, ::-1, :]
    if zs[0] > zs[-1]:
        zs, dose = zs[::-1], dose[::-1, :, :]
    return RegularGridInterpolator((zs, ys, xs), dose, method="linear")


# ------------------------------------------------------------------ closed forms vs MC

Inside = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (x, y, slab plane z) -> bool


def _sample_slab_stack(
    rng: np.random.Generator,
    planes: list[float],
    bbox_xy: tuple[float, float, float, float],
    inside: Inside,
    n: int = N_MC,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform points in the slab stack (slab = plane +- H/2), by rejection from its bounding box."""
    planes_arr = np.asarray(sorted(planes))
    x0, x1, y0, y1 = bbox_xy
    xs, ys, zs = [], [], []
    total = 0
    while total < n:
        m = 4 * n
        k = rng.integers(0, len(planes_arr), m)
        z_plane = planes_arr[k]
        x = rng.uniform(x0, x1, m)
        y = rng.uniform(y0, y1, m)
        keep = inside(x, y, z_plane)
        z = z_plane + rng.uniform(-H / 2, H / 2, m)
        xs.append(x[keep])
        ys.append(y[keep])
        zs.append(z[keep])
        total += int(keep.sum())
    return np.concatenate(xs)[:n], np.concatenate(ys)[:n], np.concatenate(zs)[:n]


def _mc_points(course: AnalyticCourse, name: str, rng: np.random.Generator):
    planes = course.contour_z[name]
    if name == "Box":
        return _sample_slab_stack(rng, planes, (-40, 20, -30, 30), lambda x, y, z: np.ones(x.shape, bool))
    if name == "Cylinder":
        cx, cy, r = 40.0, 0.0, 25.0
        return _sample_slab_stack(
            rng, planes, (cx - r, cx + r, cy - r, cy + r), lambda x, y, z: (x - cx) ** 2 + (y - cy) ** 2 <= r * r
        )
    assert name == "Sphere"
    cx, cy, cz, r = 0.0, 40.0, 0.0, 20.0
    return _sample_slab_stack(
        rng,
        planes,
        (cx - r, cx + r, cy - r, cy + r),
        lambda x, y, z: (x - cx) ** 2 + (y - cy) ** 2 <= r * r - (z - cz) ** 2,
    )


@pytest.mark.parametrize("name", ["Box", "Cylinder", "Sphere"])
def test_closed_form_matches_monte_carlo(gradient: AnalyticCourse, name: str) -> None:
    rng = np.random.default_rng(20240115)
    x, y, z = _mc_points(gradient, name, rng)
    dose = gradient.case.dose_fn(x, y, z)
    exp = gradient.expected[name]
    se = dose.std() / math.sqrt(dose.size)
    assert abs(dose.mean() - exp.mean_gy) < 5 * se + 1e-3
    assert abs(np.percentile(dose, 50) - exp.d_at_volume_pct(50)) < 0.05
    assert abs(np.percentile(dose, 5) - exp.d_at_volume_pct(95)) < 0.05
    assert abs(np.percentile(dose, 98) - exp.d_at_volume_pct(2)) < 0.05
    for d in (30.0, 35.0, 40.0):
        assert abs(100.0 * np.mean(dose >= d) - exp.v_at_dose_gy(d)) < 0.5
    assert exp.min_gy <= dose.min() + 0.01 and dose.max() <= exp.max_gy + 0.01

    # volume of the slab stack from the number of contoured planes (independent formula)
    planes = np.asarray(gradient.contour_z[name])
    if name == "Box":
        volume = 60 * 60 * H * len(planes)
    elif name == "Cylinder":
        volume = math.pi * 25.0**2 * H * len(planes)
    else:
        volume = float(np.sum(math.pi * (20.0**2 - planes**2) * H))
    assert abs(exp.volume_cc * 1000.0 / volume - 1) < 2e-5

    # the stored RTDOSE, trilinearly interpolated at the MC points, reproduces the linear field
    (ds,) = _read(gradient, "RTDOSE")
    interpolated = _trilinear(ds)(np.column_stack([z, y, x]))
    assert np.max(np.abs(interpolated - dose)) < 1e-4


def test_gradient_closed_forms_exact_values(gradient: AnalyticCourse) -> None:
    e = gradient.expected
    # Box: x uniform on [-40, 20] -> D_p = a + b (20 - 60 p / 100), V_d linear
    box = e["Box"]
    assert box.volume_cc == pytest.approx(144.0, abs=1e-9)
    assert (box.mean_gy, box.min_gy, box.max_gy) == pytest.approx((28.0, 22.0, 34.0), abs=1e-9)
    pct = np.array([0.0, 2.0, 50.0, 95.0, 98.0, 100.0])
    assert np.allclose(box.d_at_volume_pct(pct), A + B * (20 - 0.6 * pct), atol=1e-9)
    assert box.v_at_dose_gy(31.0) == pytest.approx(100 * (20 - 5) / 60, abs=1e-9)
    assert box.v_at_dose_gy(40.0) == 0.0 and box.v_at_dose_gy(10.0) == 100.0
    # symmetric shapes: mean = D50 = dose at the centre x
    for name, cx in [("Cylinder", 40.0), ("Sphere", 0.0), ("SmallSphere", -60.0), ("BODY", 0.0)]:
        assert e[name].mean_gy == pytest.approx(A + B * cx, abs=1e-6)
        assert e[name].d_at_volume_pct(50.0) == pytest.approx(A + B * cx, abs=1e-6)
    # EdgeBox: x in [last pixel centre - 21, last pixel centre - 1] = [106, 126]
    assert (e["EdgeBox"].min_gy, e["EdgeBox"].max_gy) == pytest.approx((A + B * 106, A + B * 126), abs=1e-9)
    assert e["EdgeBox"].volume_cc == pytest.approx(20 * 16 * 20 / 1000)
    # ideal shapes: true sphere volume and the slab-stack discrepancy
    sphere = gradient.ideal["Sphere"]
    assert sphere.volume_cc == pytest.approx(4 / 3 * math.pi * 8.0)
    assert e["Sphere"].volume_cc / sphere.volume_cc - 1 == pytest.approx(0.00125, abs=1e-4)
    assert gradient.ideal["Cylinder"].v_at_dose_gy(40.0) == pytest.approx(e["Cylinder"].v_at_dose_gy(40.0), abs=1e-3)
    # D(V) inverts V(D)
    for name in ("Box", "Cylinder", "Sphere", "SmallSphere", "EdgeBox", "BODY"):
        for p in (5.0, 33.0, 80.0):
            assert e[name].v_at_dose_gy(e[name].d_at_volume_pct(p)) == pytest.approx(p, abs=1e-6)


def test_uniform_case(uniform: AnalyticCourse, gradient: AnalyticCourse) -> None:
    for name in ROI_ORDER[:-1]:
        e = uniform.expected[name]
        assert e.volume_cc == pytest.approx(gradient.expected[name].volume_cc, rel=1e-12)
        assert e.mean_gy == e.min_gy == e.max_gy == UNIFORM_GY
        assert np.all(e.d_at_volume_pct(np.array([0.0, 50.0, 100.0])) == UNIFORM_GY)
        assert e.v_at_dose_gy(UNIFORM_GY) == 100.0 and e.v_at_dose_gy(UNIFORM_GY + 1e-6) == 0.0
    # the dose stays exactly 50 Gy when interpolated anywhere on BODY's boundary
    (ds,) = _read(uniform, "RTDOSE")
    t = np.linspace(0, 2 * math.pi, 1000)
    r = uniform.case.body_radius_mm * 1.0001
    pts = np.column_stack([np.full(t.shape, 59.9), r * np.sin(t), r * np.cos(t)])
    assert np.allclose(_trilinear(ds)(pts), UNIFORM_GY, atol=1e-4)


# ---------------------------------------------------------------- geometry / positions


@pytest.mark.parametrize("which", ["gradient", "gradient_ffs"])
def test_edge_box_inside_ct_field(which: str, request: pytest.FixtureRequest) -> None:
    course: AnalyticCourse = request.getfixturevalue(which)
    (struct,) = _read(course, "RTSTRUCT")
    cx, cy, _ = _ct_centres(course)
    pixel = cx[1] - cx[0]
    points = np.concatenate(_roi_contours(struct)["EdgeBox"])
    assert points[:, 0].max() <= cx.max() and points[:, 0].min() >= cx.min()
    assert points[:, 1].max() <= cy.max() and points[:, 1].min() >= cy.min()
    assert points[:, 0].max() >= cx.max() - pixel  # within one pixel of the +x edge
    for polys in _roi_contours(struct).values():
        for p in polys:
            assert np.all(np.abs(p[:, :2]) <= cx.max())


def test_patient_positions_and_uids(gradient: AnalyticCourse, gradient_ffs: AnalyticCourse) -> None:
    for course, position in [(gradient, "HFS"), (gradient_ffs, "FFS")]:
        ct = _read(course, "CT")[0]
        (plan,) = _read(course, "RTPLAN")
        (dose,) = _read(course, "RTDOSE")
        assert ct.PatientPosition == position == plan.PatientSetupSequence[0].PatientPosition
        iop = [float(v) for v in ct.ImageOrientationPatient]
        assert iop == [*ORIENTATIONS[position][0], *ORIENTATIONS[position][1]]
        assert [float(v) for v in dose.ImageOrientationPatient] == iop
    for name in ROI_ORDER[:-1]:
        a, b = gradient.expected[name], gradient_ffs.expected[name]
        assert (a.volume_cc, a.mean_gy, a.min_gy, a.max_gy) == pytest.approx(
            (b.volume_cc, b.mean_gy, b.min_gy, b.max_gy)
        )
    uids = {gradient.study_uid, gradient.struct_uid, gradient.plan_uid, gradient.dose_uid, gradient.ct_series_uid}
    uids_ffs = {gradient_ffs.study_uid, gradient_ffs.struct_uid, gradient_ffs.plan_uid, gradient_ffs.dose_uid}
    assert not uids & uids_ffs
    ctx = course_context(Path("unused"), 0, SynthOptions())
    patient_uids = {ctx.study_uid, ctx.frame_of_reference_uid, ctx.role("rtstruct"), ctx.role("ct/series")}
    assert not uids & patient_uids and gradient.frame_of_reference_uid not in patient_uids


def test_deterministic(gradient: AnalyticCourse, tmp_path: Path) -> None:
    again = write_analytic_course(tmp_path / "again", "gradient")
    assert (again.study_uid, again.struct_uid, again.dose_uid) == (
        gradient.study_uid,
        gradient.struct_uid,
        gradient.dose_uid,
    )
    for a, b in zip(gradient.files, again.files, strict=True):
        assert a.relative_to(gradient.folder) == b.relative_to(again.folder)
        assert a.read_bytes() == b.read_bytes()


def test_rejects_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_analytic_course(tmp_path / "a", "nonsense")
    with pytest.raises(ValueError):
        write_analytic_course(tmp_path / "b", patient_position="XYZ")
    with pytest.raises(ValueError):
        write_analytic_course(tmp_path / "c", rows=32)  # shapes do not fit in a 64 mm field
