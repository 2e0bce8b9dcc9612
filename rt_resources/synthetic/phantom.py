"""Analytic thorax phantom: shapes, HU values and dose distributions.

Everything is in DICOM patient coordinates (mm): +x patient left, +y posterior,
+z superior.  The phantom does not depend on the patient position (HFS/FFS/...):
position only changes how the image grid is oriented, never where organs are in
patient coordinates.  Functions take numpy arrays (any shape) of x, y, z in mm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .options import SynthOptions

HU_AIR = -1000.0
HU_SOFT_TISSUE = 40.0
HU_LUNG = -800.0
HU_HEART = 45.0
HU_BONE = 700.0
HU_CORD = 30.0
NOISE_HU = 10  # noise amplitude inside the body: uniform integers in [-10, 10]

PRIMARY_RX_GY = 60.0
PRIMARY_FRACTIONS = 30
BOOST_RX_GY = 10.0
BOOST_FRACTIONS = 5
PENUMBRA_SIGMA_MM = 8.0  # Gaussian fall-off width outside the target sphere
BATH_FRACTION = 0.05  # low dose everywhere in the body, fraction of prescription
SECOND_COURSE_SHIFT_MM = (0.0, 0.0, 20.0)


@dataclass(frozen=True)
class Ellipsoid:
    """Axis-aligned ellipsoid; a semi-axis of ``inf`` along z makes an infinite cylinder."""

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]

    def contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Boolean mask of points inside (boundary included)."""
        cx, cy, cz = self.centre
        ax, ay, az = self.semi_axes
        q = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2
        if math.isfinite(az):
            q = q + ((z - cz) / az) ** 2
        return q <= 1.0

    def cross_section(self, z: float) -> tuple[float, float, float, float] | None:
        """Ellipse (cx, cy, semi-axis x, semi-axis y) cut by the plane at ``z``, or None."""
        cx, cy, cz = self.centre
        ax, ay, az = self.semi_axes
        scale = 1.0
        if math.isfinite(az):
            t = 1.0 - ((z - cz) / az) ** 2
            if t <= 0.0:
                return None
            scale = math.sqrt(t)
        return cx, cy, ax * scale, ay * scale

    def polygon(self, z: float, n_points: int = 64) -> np.ndarray | None:
        """Closed planar polygon (n_points, 3) of the cross-section at ``z`` (mm), or None.

        Cross-sections with a semi-axis under 0.5 mm are dropped (too small to draw).
        """
        section = self.cross_section(z)
        if section is None:
            return None
        cx, cy, ax, ay = section
        if min(ax, ay) < 0.5:
            return None
        t = np.arange(n_points) * (2.0 * math.pi / n_points)
        pts = np.empty((n_points, 3))
        pts[:, 0] = cx + ax * np.cos(t)
        pts[:, 1] = cy + ay * np.sin(t)
        pts[:, 2] = z
        return pts


@dataclass(frozen=True)
class Phantom:
    """The analytic patient of one course (its frame of reference)."""

    centre: tuple[float, float, float]
    body: Ellipsoid
    lung_l: Ellipsoid
    lung_r: Ellipsoid
    heart: Ellipsoid
    spine: Ellipsoid
    cord: Ellipsoid
    ptv: Ellipsoid
    boost: Ellipsoid

    def structures(self) -> dict[str, Ellipsoid]:
        """ROI name -> shape, in RTSTRUCT order (boost target excluded)."""
        return {
            "BODY": self.body,
            "PTV": self.ptv,
            "Lung_L": self.lung_l,
            "Lung_R": self.lung_r,
            "Heart": self.heart,
            "Spine": self.spine,
            "SpinalCord": self.cord,
        }

    def hu(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Noise-free CT number (HU) at patient points (mm)."""
        x, y, z = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
        out = np.full(x.shape, HU_AIR)
        out[self.body.contains(x, y, z)] = HU_SOFT_TISSUE
        out[self.lung_l.contains(x, y, z)] = HU_LUNG
        out[self.lung_r.contains(x, y, z)] = HU_LUNG
        out[self.heart.contains(x, y, z)] = HU_HEART
        out[self.spine.contains(x, y, z)] = HU_BONE
        out[self.cord.contains(x, y, z)] = HU_CORD
        return out

    def dose_gy(
        self,
        x: np.ndarray,
        y: np.ndarray,
        z: np.ndarray,
        prescription_gy: float = PRIMARY_RX_GY,
        target: str = "PTV",
    ) -> np.ndarray:
        """Analytic plan dose (Gy) at patient points (mm).

        ``prescription_gy`` everywhere inside the target sphere (``"PTV"`` or
        ``"PTV_boost"``), a Gaussian fall-off (sigma ``PENUMBRA_SIGMA_MM``) outside it
        on top of a bath of ``BATH_FRACTION * prescription_gy``, and 0 outside BODY.
        """
        sphere = self.ptv if target == "PTV" else self.boost
        x, y, z = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
        cx, cy, cz = sphere.centre
        radius = sphere.semi_axes[0]
        r = np.sqrt((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2)
        outside = np.maximum(r - radius, 0.0)
        f = np.exp(-0.5 * (outside / PENUMBRA_SIGMA_MM) ** 2)
        bath = BATH_FRACTION * prescription_gy
        dose = bath + (prescription_gy - bath) * f
        return np.where(self.body.contains(x, y, z), dose, 0.0)


def make_phantom(options: SynthOptions, course_number: int = 1, patient_index: int = 0) -> Phantom:
    """The phantom of ``course_number`` (1 or 2) for these options.

    Sizes scale with the field width ``W = rows * pixel_mm`` and the scan length
    ``L = slices * slice_mm``.  Course 2 uses a new frame of reference in which the
    patient (and the image grid, centred on it) is shifted by
    ``SECOND_COURSE_SHIFT_MM``. Patients other than index 0 vary deterministically (body
    width up to +-8 %, target position and size), so cohort tables are not all alike.
    """
    frac = lambda k: (patient_index * k) % 1.0 - 0.5  # noqa: E731 -- in [-0.5, 0.5), 0 for index 0
    w = options.rows * options.pixel_mm * (1.0 + 0.16 * frac(0.7548776662))
    length = options.slices * options.slice_mm
    shift = SECOND_COURSE_SHIFT_MM if course_number > 1 else (0.0, 0.0, 0.0)
    cx, cy, cz = shift
    inf = math.inf

    def at(dx: float, dy: float, dz: float = 0.0) -> tuple[float, float, float]:
        return (cx + dx, cy + dy, cz + dz)

    ptv_r = min(25.0, 0.4 * length, 0.15 * w) * (1.0 + 0.3 * frac(0.5698402910))
    ptv_x = (-0.08 + 0.06 * frac(0.6180339887)) * w  # towards the left or right lung
    return Phantom(
        centre=(cx, cy, cz),
        body=Ellipsoid(at(0, 0), (0.40 * w, 0.28 * w, inf)),
        lung_l=Ellipsoid(at(+0.18 * w, -0.02 * w), (0.11 * w, 0.16 * w, 0.35 * length)),
        lung_r=Ellipsoid(at(-0.18 * w, -0.02 * w), (0.11 * w, 0.16 * w, 0.35 * length)),
        heart=Ellipsoid(at(0.0, -0.10 * w), (0.05 * w, 0.06 * w, 0.20 * length)),
        spine=Ellipsoid(at(0.0, 0.15 * w), (0.05 * w, 0.05 * w, inf)),
        cord=Ellipsoid(at(0.0, 0.225 * w), (0.02 * w, 0.02 * w, inf)),
        ptv=Ellipsoid(at(ptv_x, -0.04 * w), (ptv_r, ptv_r, ptv_r)),
        boost=Ellipsoid(at(ptv_x, -0.04 * w), (0.6 * ptv_r, 0.6 * ptv_r, 0.6 * ptv_r)),
    )


def noisy_hu(
    phantom: Phantom,
    x: np.ndarray,
    y: np.ndarray,
    z: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """``phantom.hu`` plus integer noise in [-NOISE_HU, NOISE_HU] inside BODY (air stays exact)."""
    values = phantom.hu(x, y, z)
    noise = rng.integers(-NOISE_HU, NOISE_HU + 1, size=values.shape)
    return np.where(phantom.body.contains(x, y, z), values + noise, values)
