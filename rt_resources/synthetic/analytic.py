"""Analytic DICOM-RT courses whose DVHs have closed-form answers (DVH accuracy tests).

``write_analytic_course(out_dir, case)`` writes one complete course (CT series,
RTSTRUCT, RTPLAN, RTDOSE) and returns an ``AnalyticCourse`` whose ``expected`` maps
every ROI name to an ``ExpectedDVH`` (volume, mean, min, max, D at volume %, V at dose).

Conventions
-----------
* Coordinates are DICOM patient coordinates (LPS, millimetres): +x patient left,
  +y posterior, +z superior.  Every shape and dose function is defined in these
  coordinates, so HFS and FFS courses have identical ROIs, doses and expected values
  (the patient position only changes ImageOrientationPatient / the voxel order).
* CT: ``rows`` x ``rows`` pixels of ``ct_pixel_mm``, ``slices`` slices ``ct_slice_mm``
  apart, centred on the origin (defaults: x, y pixel centres in [-127, 127] mm, slice
  planes z = -59, -57, ..., 59 mm).  A water cylinder (0 HU, axis z, radius
  ``last pixel centre - 0.5 mm`` = 126.5 mm) in air (-1000 HU); no noise.
* Slab convention (dicompyler-core and most TPS): each contour lies exactly on a CT
  slice plane and represents a slab of one slice spacing ``h`` centred on that plane.
  An ROI contoured on N planes therefore has height N * h, and its volume is
  ``sum_i area_i * h``.  A shape is contoured on every CT plane with
  ``lo <= z <= hi`` (boxes, cylinders) or where its cross-section radius is
  >= 0.5 mm (spheres).  Defaults: Box on the 20 planes z = -19..19 (height 40 mm),
  Cylinder on 30 planes (60 mm), Sphere (R 20 mm at z = 0) on 20 planes, SmallSphere
  (R 4 mm) on 4 planes, EdgeBox on 10 planes, BODY on all 60.
* "Closed form": the expected values are exact integrals of the dose over the slab
  stack of the polygons actually written (vertex coordinates rounded to 0.001 mm as
  in ContourData), not estimates from a voxelisation.  For D = a + b x the volume
  receiving >= d is the volume with x >= t, t = (d - a) / b; per slab the polygon area
  with x >= t is, by Green's theorem, the boundary integral of max(x - t, 0) dy,
  which is a closed-form (piecewise quadratic) sum over the polygon edges.  The mean
  is a + b * centroid x (boundary integral of x^2/2 dy).  min/max are a + b * the
  extreme vertex x.  ``d_at_volume_pct`` inverts ``v_at_dose_gy`` by bisection (to
  ~1e-12 Gy).  Any engine that interpolates the RTDOSE (tri)linearly reproduces the
  linear field exactly, so its remaining error is its own geometry discretisation.
* Circles are written as 256-gons with the *same area* as the circle (vertex radius
  R * sqrt(2 pi / (256 sin(2 pi / 256))) = 1.0000502 R), so before rounding the
  polygon area equals the circle area exactly and the boundary stays within 5.1e-5 R
  of the circle (1.3 micrometre for R = 25 mm).  Rounding the vertices to 0.001 mm
  leaves an area error < 2e-5 relative (measured: 1.3e-6 BODY, 4.4e-6 Cylinder,
  1.3e-5 for the 4 mm SmallSphere section), well under the 0.01 % budget; the
  expected values include it exactly because they use the rounded vertices.  ``AnalyticCourse.ideal``
  gives, for information, the values of the true shapes: true spheres (4/3 pi R^3,
  spherical-cap formula) and true circular cylinders of the contoured height; the
  sphere slab stack differs from the true sphere by the slab discretisation (Sphere
  +0.13 % volume, SmallSphere +3.1 % at defaults), which is *not* an engine error.
* Dose grid (RTDOSE, DoseSummationType PLAN, DoseUnits GY): same orientation as the
  CT, ``dose_pixel_mm`` spacing along all three axes, covering the whole CT field plus
  one dose pixel, its centre offset by 0.37 mm along x, y and z so that dose and CT
  grids never coincide.  DoseGridScaling puts the maximum stored value at ~2**24.
* Cases: ``"gradient"``: D = max(0, 30 Gy + 0.2 Gy/mm * x) (linear along x; positive
  for x > -150 mm, i.e. everywhere in the field).  ``"uniform"``: D = 50 Gy inside a
  cylinder of radius body radius + 2 dose pixels, 0 outside (the margin keeps the
  interpolated dose at exactly 50 Gy on and inside BODY).  RTPLAN prescription
  60 Gy in 30 fractions for both.
* ROIs: BODY (EXTERNAL, the water cylinder), Box, Cylinder, Sphere, SmallSphere,
  EdgeBox (touching the +x image edge: x up to the last pixel centre - 1 mm), and
  Empty (declared, no ContourSequence; its ExpectedDVH has volume 0 and NaN doses).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.uid import generate_uid

from .common import CourseContext, UidFactory
from .ct import write_ct
from .geometry import Grid, centred_grid
from .options import PATIENT_POSITIONS, SynthOptions
from .phantom import make_phantom
from .rtdose import dose_scaling, quantise, write_rtdose
from .rtplan import PlanSpec, write_rtplan
from .rtstruct import write_rtstruct

CASES = ("gradient", "uniform")
GRADIENT_A_GY = 30.0  # dose at x = 0
GRADIENT_B_GY_PER_MM = 0.2  # dose slope along patient x
UNIFORM_GY = 50.0
PRESCRIPTION_GY = 60.0
FRACTIONS = 30
CIRCLE_POINTS = 256
MIN_SECTION_RADIUS_MM = 0.5  # sphere cross-sections smaller than this are not contoured
DOSE_GRID_OFFSET_MM = 0.37  # dose grid centre offset from the CT grid centre (x, y, z)
UNIFORM_MARGIN_PIXELS = 2  # uniform dose extends this many dose pixels beyond BODY
HU_WATER = 0.0
HU_AIR = -1000.0
PLAN = PlanSpec("analytic", "ANALYTIC", PRESCRIPTION_GY, FRACTIONS, "Box", series_number=3)
ROI_ORDER = ("BODY", "Box", "Cylinder", "Sphere", "SmallSphere", "EdgeBox", "Empty")
_Z_TOL = 1e-6

DoseFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def _rounded(points: np.ndarray) -> np.ndarray:
    """Round to 0.001 mm exactly like the RTSTRUCT writer (Python ``round``)."""
    return np.array([[round(float(v), 3) for v in row] for row in points])


def _circle(cx: float, cy: float, radius: float, z: float, n_points: int) -> np.ndarray:
    factor = math.sqrt(2.0 * math.pi / (n_points * math.sin(2.0 * math.pi / n_points)))
    t = np.arange(n_points) * (2.0 * math.pi / n_points)
    pts = np.empty((n_points, 3))
    pts[:, 0] = cx + radius * factor * np.cos(t)
    pts[:, 1] = cy + radius * factor * np.sin(t)
    pts[:, 2] = z
    return _rounded(pts)


@dataclass(frozen=True)
class BoxShape:
    """Axis-aligned box contoured on the CT planes with z_range[0] <= z <= z_range[1]."""

    x_range: tuple[float, float]
    y_range: tuple[float, float]
    z_range: tuple[float, float]

    def polygon(self, z: float, n_points: int = CIRCLE_POINTS) -> np.ndarray | None:
        """Counter-clockwise rectangle (4, 3) on plane ``z`` or None (n_points unused)."""
        if not self.z_range[0] - _Z_TOL <= z <= self.z_range[1] + _Z_TOL:
            return None
        (x0, x1), (y0, y1) = self.x_range, self.y_range
        return _rounded(np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=float))


@dataclass(frozen=True)
class CylinderShape:
    """Circular cylinder along z (centre (cx, cy)), contoured on planes within z_range."""

    centre_xy: tuple[float, float]
    radius: float
    z_range: tuple[float, float] = (-math.inf, math.inf)

    def polygon(self, z: float, n_points: int = CIRCLE_POINTS) -> np.ndarray | None:
        """Equal-area ``n_points``-gon of the circle on plane ``z``, or None."""
        if not self.z_range[0] - _Z_TOL <= z <= self.z_range[1] + _Z_TOL:
            return None
        return _circle(*self.centre_xy, self.radius, z, n_points)


@dataclass(frozen=True)
class SphereShape:
    """Sphere; plane z is contoured with the circle of radius sqrt(R^2 - (z - cz)^2)."""

    centre: tuple[float, float, float]
    radius: float

    def section_radius(self, z: float) -> float:
        """Radius of the cross-section at ``z`` (0 outside)."""
        q = self.radius**2 - (z - self.centre[2]) ** 2
        return math.sqrt(q) if q > 0 else 0.0

    def polygon(self, z: float, n_points: int = CIRCLE_POINTS) -> np.ndarray | None:
        """Equal-area ``n_points``-gon of the cross-section, or None under 0.5 mm radius."""
        r = self.section_radius(z)
        if r < MIN_SECTION_RADIUS_MM:
            return None
        return _circle(self.centre[0], self.centre[1], r, z, n_points)


@dataclass(frozen=True)
class EmptyShape:
    """An ROI with no contour at all."""

    def polygon(self, z: float, n_points: int = CIRCLE_POINTS) -> np.ndarray | None:
        return None


Shape = BoxShape | CylinderShape | SphereShape | EmptyShape


@dataclass(frozen=True)
class AnalyticCase:
    """Dose function and ROI shapes of one analytic course (patient mm, Gy)."""

    name: str  # "gradient" or "uniform"
    dose_fn: DoseFn  # Gy at patient x, y, z (mm)
    shapes: dict[str, Shape]  # ROI name -> shape, in RTSTRUCT order
    body_radius_mm: float = 0.0


@dataclass(frozen=True)
class ExpectedDVH:
    """Closed-form cumulative DVH of one ROI.

    ``volume_above_cc(d)`` is the volume (cc) receiving >= d Gy (vectorised).  For an
    ROI without contours volume_cc is 0 and the doses are NaN.
    """

    volume_cc: float
    mean_gy: float
    min_gy: float
    max_gy: float
    volume_above_cc: Callable[[np.ndarray], np.ndarray] = field(repr=False, compare=False)

    def v_at_dose_gy(self, dose_gy: float | np.ndarray) -> float | np.ndarray:
        """Percentage of the volume receiving >= ``dose_gy``."""
        d = np.asarray(dose_gy, dtype=float)
        if self.volume_cc <= 0:
            out = np.full(d.shape, np.nan)
        else:
            cc = np.asarray(self.volume_above_cc(d.reshape(-1)), dtype=float).reshape(d.shape)
            out = 100.0 * cc / self.volume_cc
        return float(out) if out.ndim == 0 else out

    def d_at_volume_pct(self, volume_pct: float | np.ndarray) -> float | np.ndarray:
        """Dose (Gy) such that ``volume_pct`` % of the volume receives at least that dose.

        0 % gives max_gy, 100 % gives min_gy; bisection on ``volume_above_cc``.
        """
        p = np.clip(np.asarray(volume_pct, dtype=float), 0.0, 100.0)
        flat = p.reshape(-1)
        if self.volume_cc <= 0:
            out = np.full(flat.shape, np.nan)
        elif self.max_gy <= self.min_gy:
            out = np.full(flat.shape, self.min_gy)
        else:
            target = flat / 100.0 * self.volume_cc
            lo = np.full(flat.shape, self.min_gy)
            hi = np.full(flat.shape, self.max_gy)
            for _ in range(64):
                mid = 0.5 * (lo + hi)
                ok = np.asarray(self.volume_above_cc(mid)) >= target
                lo = np.where(ok, mid, lo)
                hi = np.where(ok, hi, mid)
            out = np.where(flat <= 0.0, self.max_gy, np.where(flat >= 100.0, self.min_gy, 0.5 * (lo + hi)))
        out = out.reshape(p.shape)
        return float(out) if out.ndim == 0 else out


@dataclass(frozen=True)
class AnalyticCourse:
    """What was written and the closed-form answers."""

    folder: Path
    files: list[Path]
    patient_id: str
    study_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str
    struct_uid: str
    plan_uid: str
    dose_uid: str
    prescription_gy: float
    fractions: int
    patient_position: str
    case: AnalyticCase
    expected: dict[str, ExpectedDVH]  # ROI name -> closed form for the contoured slab stack
    ideal: dict[str, ExpectedDVH]  # round ROIs -> values of the true sphere / circular cylinder
    roi_numbers: dict[str, int]
    contour_z: dict[str, list[float]]  # ROI name -> contoured plane z (mm)
    ct_grid: Grid
    dose_grid: Grid
    #: (plan UID, dose UID, dose scale, fractions) per treatment phase when ``phases`` was given
    phases: list[tuple[str, str, float, int]] = field(default_factory=list)


# ---------------------------------------------------------------------------- cases


def _gradient_dose(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=float)
    shape = np.broadcast_shapes(x.shape, np.shape(y), np.shape(z))
    return np.broadcast_to(np.maximum(0.0, GRADIENT_A_GY + GRADIENT_B_GY_PER_MM * x), shape).copy()


def _uniform_dose(radius_mm: float) -> DoseFn:
    def dose(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        x, y, _ = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
        return np.where(x**2 + y**2 <= radius_mm**2, UNIFORM_GY, 0.0)

    return dose


def analytic_case(
    case: str = "gradient", *, rows: int = 128, ct_pixel_mm: float = 2.0, dose_pixel_mm: float = 2.5
) -> AnalyticCase:
    """Dose function and shapes of ``case`` for a CT of ``rows`` x ``rows`` ``ct_pixel_mm`` pixels."""
    if case not in CASES:
        raise ValueError(f"case must be one of {CASES}")
    last_centre = (rows - 1) / 2.0 * ct_pixel_mm
    body_r = last_centre - 0.5
    edge_x = last_centre - 1.0
    shapes: dict[str, Shape] = {
        "BODY": CylinderShape((0.0, 0.0), body_r),
        "Box": BoxShape((-40.0, 20.0), (-30.0, 30.0), (-20.0, 20.0)),
        "Cylinder": CylinderShape((40.0, 0.0), 25.0, (-30.0, 30.0)),
        "Sphere": SphereShape((0.0, 40.0, 0.0), 20.0),
        "SmallSphere": SphereShape((-60.0, -45.0, 0.0), 4.0),
        "EdgeBox": BoxShape((edge_x - 20.0, edge_x), (-8.0, 8.0), (-10.0, 10.0)),
        "Empty": EmptyShape(),
    }
    if case == "gradient":
        dose_fn: DoseFn = _gradient_dose
    else:
        dose_fn = _uniform_dose(body_r + UNIFORM_MARGIN_PIXELS * dose_pixel_mm)
    return AnalyticCase(name=case, dose_fn=dose_fn, shapes=shapes, body_radius_mm=body_r)


def _max_radius(shape: Shape) -> float:
    """Largest distance from the z axis of the shape (mm)."""
    if isinstance(shape, BoxShape):
        return max(math.hypot(x, y) for x in shape.x_range for y in shape.y_range)
    if isinstance(shape, CylinderShape):
        return math.hypot(*shape.centre_xy) + shape.radius
    if isinstance(shape, SphereShape):
        return math.hypot(shape.centre[0], shape.centre[1]) + shape.radius
    return 0.0


# ------------------------------------------------------------------ closed forms


def _positive_part_mean(u0: np.ndarray, u1: np.ndarray) -> np.ndarray:
    """Integral over s in [0, 1] of max(0, u0 + s (u1 - u0)), elementwise and stable."""
    p0 = np.maximum(u0, 0.0)
    p1 = np.maximum(u1, 0.0)
    diff = np.abs(u1 - u0)
    mixed = (p0**2 + p1**2) / (2.0 * np.where(diff > 0, diff, 1.0))
    return np.where((u0 >= 0) & (u1 >= 0), 0.5 * (u0 + u1), np.where(diff > 0, mixed, 0.0))


@dataclass(frozen=True)
class _SlabStack:
    """All polygon edges of an ROI, each weighted by its slab thickness and orientation."""

    x0: np.ndarray
    y0: np.ndarray
    x1: np.ndarray
    dy_w: np.ndarray  # (y1 - y0) * slab thickness * orientation sign
    x_min: float
    x_max: float

    @classmethod
    def build(cls, polygons: list[np.ndarray], thickness: float) -> _SlabStack:
        x0s, y0s, x1s, dys = [], [], [], []
        for poly in polygons:
            x, y = poly[:, 0], poly[:, 1]
            xn, yn = np.roll(x, -1), np.roll(y, -1)
            sign = 1.0 if np.sum(x * yn - xn * y) >= 0 else -1.0
            x0s.append(x)
            y0s.append(y)
            x1s.append(xn)
            dys.append((yn - y) * thickness * sign)
        cat = np.concatenate
        xs = cat([p[:, 0] for p in polygons])
        return cls(cat(x0s), cat(y0s), cat(x1s), cat(dys), float(xs.min()), float(xs.max()))

    def volume_mm3(self) -> float:
        return float(np.sum(self.dy_w * 0.5 * (self.x0 + self.x1)))

    def first_moment_x(self) -> float:
        """Integral of x over the volume (mm^4)."""
        return float(np.sum(self.dy_w * (self.x0**2 + self.x0 * self.x1 + self.x1**2) / 6.0))

    def volume_above_mm3(self, t: np.ndarray) -> np.ndarray:
        """Volume (mm^3) with x >= t for each threshold in ``t``."""
        t = np.asarray(t, dtype=float).reshape(-1)
        out = np.empty(t.shape)
        for start in range(0, t.size, 64):
            tt = t[None, start : start + 64]
            part = _positive_part_mean(self.x0[:, None] - tt, self.x1[:, None] - tt)
            out[start : start + 64] = self.dy_w @ part
        return np.maximum(out, 0.0)


def _empty_expected() -> ExpectedDVH:
    nan = math.nan
    return ExpectedDVH(0.0, nan, nan, nan, lambda d: np.zeros(np.shape(d)))


def _uniform_expected(volume_cc: float) -> ExpectedDVH:
    def above(d: np.ndarray) -> np.ndarray:
        return np.where(np.asarray(d, dtype=float) <= UNIFORM_GY, volume_cc, 0.0)

    return ExpectedDVH(volume_cc, UNIFORM_GY, UNIFORM_GY, UNIFORM_GY, above)


def _linear_expected(
    volume_cc: float, mean_x: float, x_min: float, x_max: float, cc_above_x: Callable[[np.ndarray], np.ndarray]
) -> ExpectedDVH:
    a, b = GRADIENT_A_GY, GRADIENT_B_GY_PER_MM

    def above(d: np.ndarray) -> np.ndarray:
        return cc_above_x((np.asarray(d, dtype=float) - a) / b)

    return ExpectedDVH(volume_cc, a + b * mean_x, a + b * x_min, a + b * x_max, above)


def expected_dvh(case: str, polygons: list[np.ndarray], thickness_mm: float) -> ExpectedDVH:
    """Closed-form DVH of the slab stack of ``polygons`` (each on its own plane) under ``case``."""
    if not polygons:
        return _empty_expected()
    stack = _SlabStack.build(polygons, thickness_mm)
    volume_mm3 = stack.volume_mm3()
    if case == "uniform":
        return _uniform_expected(volume_mm3 / 1000.0)
    return _linear_expected(
        volume_mm3 / 1000.0,
        stack.first_moment_x() / volume_mm3,
        stack.x_min,
        stack.x_max,
        lambda t: stack.volume_above_mm3(t) / 1000.0,
    )


def _segment_fraction(d: np.ndarray) -> np.ndarray:
    """Fraction of a unit-radius disc with x >= d."""
    d = np.clip(d, -1.0, 1.0)
    return (np.arccos(d) - d * np.sqrt(1.0 - d**2)) / math.pi


def ideal_dvh(case: str, shape: Shape, height_mm: float = 0.0) -> ExpectedDVH | None:
    """DVH of the true shape: sphere, or circular cylinder of ``height_mm``; None for others."""
    if isinstance(shape, SphereShape):
        r, cx = shape.radius, shape.centre[0]
        volume = 4.0 / 3.0 * math.pi * r**3 / 1000.0

        def cc_above_x(t: np.ndarray) -> np.ndarray:
            h = np.clip(cx + r - np.asarray(t, dtype=float), 0.0, 2.0 * r)
            return math.pi * h**2 * (3.0 * r - h) / 3.0 / 1000.0

    elif isinstance(shape, CylinderShape):
        r, cx = shape.radius, shape.centre_xy[0]
        volume = math.pi * r**2 * height_mm / 1000.0

        def cc_above_x(t: np.ndarray) -> np.ndarray:
            return volume * _segment_fraction((np.asarray(t, dtype=float) - cx) / r)

    else:
        return None
    if case == "uniform":
        return _uniform_expected(volume)
    return _linear_expected(volume, cx, cx - r, cx + r, cc_above_x)


# ------------------------------------------------------------------------ writer


class _AnalyticUids(UidFactory):
    """Deterministic UIDs from (seed, course key, role), disjoint from write_patient's."""

    def __init__(self, seed: int, key: str) -> None:
        super().__init__(seed, 0)
        self.key = key

    def __call__(self, role: str) -> str:
        return str(generate_uid(entropy_srcs=["rtpipeline-synth", "analytic", f"seed={self.seed}", self.key, role]))


def _dose_grid(ct: Grid, dose_pixel_mm: float, patient_position: str) -> Grid:
    """Dose grid covering the CT voxels plus one dose pixel, centre offset by 0.37 mm."""
    slices, rows, cols = ct.shape
    half_x = (cols / 2.0) * ct.spacing[0] + dose_pixel_mm
    half_y = (rows / 2.0) * ct.spacing[1] + dose_pixel_mm
    half_z = (slices / 2.0) * ct.spacing[2] + dose_pixel_mm
    n_cols = math.ceil(2.0 * half_x / dose_pixel_mm) + 1
    n_rows = math.ceil(2.0 * half_y / dose_pixel_mm) + 1
    n_frames = math.ceil(2.0 * half_z / dose_pixel_mm) + 1
    off = DOSE_GRID_OFFSET_MM
    return centred_grid(
        (off, off, off), (n_frames, n_rows, n_cols), (dose_pixel_mm, dose_pixel_mm, dose_pixel_mm), patient_position
    )


def write_analytic_course(
    out_dir: Path,
    case: str = "gradient",
    *,
    patient_position: str = "HFS",
    ct_pixel_mm: float = 2.0,
    ct_slice_mm: float = 2.0,
    dose_pixel_mm: float = 2.5,
    rows: int = 128,
    slices: int = 60,
    seed: int = 0,
    phases: tuple[tuple[float, int], ...] = (),
) -> AnalyticCourse:
    """Write one analytic course into ``out_dir`` and return its closed-form DVHs.

    Layout (names never come from tag values): ``out_dir/CT/CT_0001.dcm ...``,
    ``out_dir/RTSTRUCT.dcm``, ``out_dir/RTPLAN.dcm``, ``out_dir/RTDOSE.dcm``.
    Deterministic: the same arguments give byte-identical files; UIDs derive from
    (seed, case, geometry, patient position, role) with an "analytic" entropy source,
    so they never collide with ``write_patient``'s.

    ``phases``: ``((scale, fractions), ...)`` writes one RTPLAN and one PLAN RTDOSE per treatment
    phase instead of the single plan (``RTPLAN_<n>.dcm``, ``RTDOSE_<n>.dcm``): phase n's dose is
    the case's dose times ``scale`` (uniform case: ``scale`` x 50 Gy), over ``fractions`` fractions;
    ``expected`` stays the case's single-dose answer (scale it per phase).
    """
    if patient_position not in PATIENT_POSITIONS:
        raise ValueError(f"patient_position must be one of {PATIENT_POSITIONS}")
    if min(ct_pixel_mm, ct_slice_mm, dose_pixel_mm) <= 0:
        raise ValueError("ct_pixel_mm, ct_slice_mm and dose_pixel_mm must be positive")
    analytic = analytic_case(case, rows=rows, ct_pixel_mm=ct_pixel_mm, dose_pixel_mm=dose_pixel_mm)
    for name, shape in analytic.shapes.items():
        if _max_radius(shape) > analytic.body_radius_mm:
            raise ValueError(f"CT field too small: ROI {name} would not fit inside BODY (increase rows/pixel size)")

    out_dir = Path(out_dir)
    options = SynthOptions(
        rows=rows,
        slices=slices,
        pixel_mm=ct_pixel_mm,
        slice_mm=ct_slice_mm,
        patient_position=patient_position,
        seed=seed,
    )
    key = f"{case}/{patient_position}/{rows}x{slices}/{ct_pixel_mm!r}/{ct_slice_mm!r}/{dose_pixel_mm!r}"
    uid = _AnalyticUids(seed, key)
    ct_grid = centred_grid(
        (0.0, 0.0, 0.0), (slices, rows, rows), (ct_pixel_mm, ct_pixel_mm, ct_slice_mm), patient_position
    )
    ctx = CourseContext(
        options=options,
        uid=uid,
        index=0,
        course_number=1,
        patient_id=f"ANALYTIC_{case.upper()}",
        patient_name=f"Analytic^{case.capitalize()}",
        study_uid=uid("study"),
        frame_of_reference_uid=uid("frame_of_reference"),
        phantom=make_phantom(options),  # unused: the CT comes from the water cylinder below
        ct_grid=ct_grid,
        folder=out_dir,
    )
    body_r2 = analytic.body_radius_mm**2

    def hu(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        return np.where(x**2 + y**2 <= body_r2, HU_WATER, HU_AIR)

    ct = write_ct(ctx, out_dir / "CT", hu_fn=hu, description=f"CT analytic water cylinder ({case})")
    files = [f.path for f in ct.files]

    struct = write_rtstruct(
        ctx, ct, analytic.shapes, out_dir / "RTSTRUCT.dcm", n_points=CIRCLE_POINTS, omit_empty_contour_sequence=True
    )
    files.append(struct.file.path)

    box = analytic.shapes["Box"]
    assert isinstance(box, BoxShape)
    iso = (sum(box.x_range) / 2.0, sum(box.y_range) / 2.0, 0.0)
    grid = _dose_grid(ct_grid, dose_pixel_mm, patient_position)
    base_dose = analytic.dose_fn(*grid.points())
    written: list[tuple[str, str, float, int]] = []
    for n, (scale, fractions) in enumerate(phases or ((1.0, FRACTIONS),), start=1):
        spec = (
            PLAN
            if not phases
            else PlanSpec(f"phase{n}", f"PHASE{n}", UNIFORM_GY * scale, int(fractions), "Box", series_number=1 + 2 * n)
        )
        suffix = f"_{n}" if phases else ""
        plan = write_rtplan(
            ctx, spec, struct.sop_instance_uid, struct.roi_numbers["Box"], iso, out_dir / f"RTPLAN{suffix}.dcm"
        )
        files.append(plan.file.path)
        dose = base_dose * float(scale)
        scaling_text, scaling = dose_scaling(float(dose.max()))
        dose_file = write_rtdose(
            ctx,
            role="analytic" if not phases else f"analytic/phase{n}",
            grid=grid,
            stored=quantise(dose, scaling),
            scaling_text=scaling_text,
            plan_uid=plan.sop_instance_uid,
            beam_number=None,
            series_number=spec.series_number + 1,
            path=out_dir / f"RTDOSE{suffix}.dcm",
        )
        files.append(dose_file.path)
        written.append((plan.sop_instance_uid, dose_file.sop_instance_uid, float(scale), int(fractions)))
    plan_uid, dose_uid = written[0][0], written[0][1]

    expected: dict[str, ExpectedDVH] = {}
    ideal: dict[str, ExpectedDVH] = {}
    contour_z: dict[str, list[float]] = {}
    for name, shape in analytic.shapes.items():
        polygons = [p for z in ct.slice_z if (p := shape.polygon(z, CIRCLE_POINTS)) is not None]
        contour_z[name] = [float(p[0, 2]) for p in polygons]
        expected[name] = expected_dvh(case, polygons, ct_slice_mm)
        truth = ideal_dvh(case, shape, len(polygons) * ct_slice_mm)
        if truth is not None:
            ideal[name] = truth

    return AnalyticCourse(
        folder=out_dir,
        files=files,
        patient_id=ctx.patient_id,
        study_uid=ctx.study_uid,
        ct_series_uid=ct.series_uid,
        frame_of_reference_uid=ctx.frame_of_reference_uid,
        struct_uid=struct.sop_instance_uid,
        plan_uid=plan_uid,
        dose_uid=dose_uid,
        prescription_gy=PRESCRIPTION_GY,
        fractions=FRACTIONS,
        patient_position=patient_position,
        case=analytic,
        expected=expected,
        ideal=ideal,
        roi_numbers=struct.roi_numbers,
        contour_z=contour_z,
        ct_grid=ct_grid,
        dose_grid=grid,
        phases=written if phases else [],
    )
