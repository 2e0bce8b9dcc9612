"""SUV metrics of one region of interest: SUVmax, SUVmean, SUVpeak, MTV and TLG.

Arrays are in SimpleITK's ``GetArrayFromImage`` order (z, y, x); ``spacing_mm`` is in
SimpleITK's order (x, y, z). Volumes are in cc (ml), one voxel being ``sx*sy*sz / 1000`` cc.

- ``suv_max``, ``suv_mean``, ``suv_std`` over the ROI voxels (``suv_std`` is the population
  standard deviation, ddof=0).
- ``suv_peak``: the mean SUV in a sphere of 1 cc (:data:`PEAK_SPHERE_CC`, radius
  (3/(4 pi))^(1/3) cm = 6.204 mm), maximised over sphere centres at the ROI's voxels; the sphere
  itself may extend beyond the ROI (PERCIST 1.0: Wahl RL et al., J Nucl Med 2009;50 Suppl
  1:122S-150S; QIBA FDG-PET/CT Profile). The sphere's voxels are those whose centres lie within
  the radius of the centre voxel's centre (weights 0/1, no partial-volume weighting), so it holds
  somewhat more or less than 1 cc on a coarse or anisotropic grid (123 voxels = 0.984 cc on a
  2 mm grid, 73 = 0.876 cc on 2x2x3 mm, 19 = 1.216 cc on 4 mm); see :func:`peak_sphere_kernel`. Near the image
  edge the mean is taken over the sphere's voxels inside the image only (the convolution of
  the SUV is divided by the convolution of an in-image indicator), so edges are not biased
  towards 0. The convolution runs only over the ROI's bounding box plus the sphere radius.
- ``mtv40_cc`` / ``tlg40``: volume of the ROI voxels with SUV >= 40 % of ``suv_max``, and that
  volume times their mean SUV (SUV*ml, i.e. g when SUV is in g/ml); ``mtv25_cc`` / ``tlg25`` the
  same for SUV >= 2.5 (0 when no voxel reaches it).
- ``volume_cc``, ``n_voxels``: the ROI.

An empty ROI gives NaN for every metric except ``volume_cc`` = 0 and ``n_voxels`` = 0.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

#: volume of the SUVpeak sphere (cc)
PEAK_SPHERE_CC = 1.0
#: radius of a sphere of PEAK_SPHERE_CC (mm): (3 V / (4 pi))^(1/3), 6.2035 mm for 1 cc
PEAK_RADIUS_MM = (3.0 * PEAK_SPHERE_CC * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
#: fixed thresholds of the MTV/TLG pairs
MTV_FRACTION_OF_MAX = 0.40
MTV_ABSOLUTE_SUV = 2.5

METRIC_NAMES = (
    "suv_max",
    "suv_mean",
    "suv_peak",
    "suv_std",
    "mtv40_cc",
    "mtv25_cc",
    "tlg40",
    "tlg25",
    "volume_cc",
    "n_voxels",
)


def _spacing(spacing_mm) -> tuple[float, float, float]:
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing_mm must be three positive numbers (x, y, z) in mm, got {spacing_mm!r}")
    return values  # type: ignore[return-value]


def peak_sphere_kernel(spacing_mm: tuple[float, float, float], radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """The SUVpeak sphere as a boolean (z, y, x) array: voxels whose centres lie within ``radius_mm``
    of the central voxel's centre, for a grid of ``spacing_mm`` (x, y, z)."""
    sx, sy, sz = _spacing(spacing_mm)
    half = [int(math.floor(radius_mm / s)) for s in (sz, sy, sx)]
    z, y, x = np.meshgrid(
        np.arange(-half[0], half[0] + 1) * sz,
        np.arange(-half[1], half[1] + 1) * sy,
        np.arange(-half[2], half[2] + 1) * sx,
        indexing="ij",
    )
    return z**2 + y**2 + x**2 <= radius_mm**2


def suv_peak(suv: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> float:
    """Mean SUV of the 1 cc sphere, maximised over centres at the voxels of ``mask`` (NaN if empty)."""
    suv, mask = _arrays(suv, mask)
    if not mask.any():
        return math.nan
    kernel = peak_sphere_kernel(spacing_mm).astype(np.float64)
    pad = [k // 2 for k in kernel.shape]
    nonzero = np.nonzero(mask)
    lo = [max(int(idx.min()) - p, 0) for idx, p in zip(nonzero, pad, strict=True)]
    hi = [min(int(idx.max()) + 1 + p, n) for idx, p, n in zip(nonzero, pad, suv.shape, strict=True)]
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    crop = suv[box]
    if not np.isfinite(crop).all():
        raise ValueError(f"SUV has {np.count_nonzero(~np.isfinite(crop))} non-finite value(s) near the ROI")
    # the crop reaches the sphere radius beyond the ROI's box, so for centres in the box the
    # constant-0 border of the convolution is only ever outside the image: divide by the
    # in-image count so that edges are not biased towards 0
    total = ndimage.correlate(crop, kernel, mode="constant", cval=0.0)
    count = ndimage.correlate(np.ones_like(crop), kernel, mode="constant", cval=0.0)
    centres = mask[box]
    return float(np.max(total[centres] / count[centres]))


def _arrays(suv: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    suv = np.asarray(suv, dtype=np.float64)
    mask = np.asarray(mask).astype(bool, copy=False)
    if suv.ndim != 3 or suv.shape != mask.shape:
        raise ValueError(f"suv and mask must be 3D arrays of one shape (z, y, x), got {suv.shape} and {mask.shape}")
    return suv, mask


def suv_metrics(suv: np.ndarray, mask: np.ndarray, spacing_mm: tuple[float, float, float]) -> dict[str, float]:
    """SUVmax, SUVmean, SUVpeak, SUV std, MTV/TLG at 40 % of max and at SUV 2.5, and the ROI's
    volume (module docstring). ``suv``/``mask`` are (z, y, x); ``spacing_mm`` is (x, y, z)."""
    suv, mask = _arrays(suv, mask)
    sx, sy, sz = _spacing(spacing_mm)
    voxel_cc = sx * sy * sz / 1000.0
    n = int(np.count_nonzero(mask))
    if n == 0:
        out = dict.fromkeys(METRIC_NAMES, math.nan)
        out.update(volume_cc=0.0, n_voxels=0)
        return out
    values = suv[mask]
    if not np.isfinite(values).all():
        raise ValueError(f"SUV has {np.count_nonzero(~np.isfinite(values))} non-finite value(s) inside the ROI")
    suv_max = float(values.max())
    hot40 = values[values >= MTV_FRACTION_OF_MAX * suv_max]
    hot25 = values[values >= MTV_ABSOLUTE_SUV]
    return {
        "suv_max": suv_max,
        "suv_mean": float(values.mean()),
        "suv_peak": suv_peak(suv, mask, spacing_mm),
        "suv_std": float(values.std()),
        "mtv40_cc": hot40.size * voxel_cc,
        "mtv25_cc": hot25.size * voxel_cc,
        # MTV * mean SUV of its voxels = sum of their SUV * voxel volume
        "tlg40": float(hot40.sum()) * voxel_cc,
        "tlg25": float(hot25.sum()) * voxel_cc,
        "volume_cc": n * voxel_cc,
        "n_voxels": n,
    }
