"""Margins in mm around a mask on its voxel grid: isotropic, or per patient direction.

Margins (mm)
------------
* **Isotropic** (a number): exact Euclidean distance on the voxel grid,
  ``scipy.ndimage.distance_transform_edt`` with the voxel spacing as sampling. Expansion by ``r``
  adds every voxel whose centre is within ``r`` of a mask voxel centre; contraction by ``r`` keeps
  the voxels whose centre is farther than ``r`` from every background voxel centre. Outside the
  image counts as background: expansion is cut at the image edge, contraction also shrinks from it.
* **Per direction** (a mapping of ``left, right, anterior, posterior, superior, inferior``, missing
  ones 0): Minkowski sum with a structuring element made of eight ellipsoid octants. An integer
  voxel offset is in the element when its displacement ``d`` in patient coordinates (DICOM LPS:
  ``+x`` left, ``+y`` posterior, ``+z`` superior; ``d = D @ (spacing * offset)``, so the direction
  matrix maps patient directions to image axes for HFS, FFS or any orientation) satisfies
  ``sum_c (d_c / r_c)^2 <= 1`` with ``r_c`` the margin on the side of ``d_c`` (a component with a
  0 margin must be 0). With six equal margins this is exactly the isotropic expansion. All six
  must be >= 0 (expansion) or all <= 0 (contraction: erosion by the same element, i.e. the
  structure shrinks by ``|r|`` from each side); mixed signs are rejected.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DIRECTIONS = ("left", "right", "anterior", "posterior", "superior", "inferior")
_EPS = 1e-6


@dataclass(frozen=True)
class Margin:
    """Margin in mm per patient direction; positive expands, negative contracts."""

    left: float = 0.0
    right: float = 0.0
    anterior: float = 0.0
    posterior: float = 0.0
    superior: float = 0.0
    inferior: float = 0.0

    @classmethod
    def isotropic(cls, mm: float) -> Margin:
        return cls(*([float(mm)] * 6))

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, d) for d in DIRECTIONS)

    @property
    def is_isotropic(self) -> bool:
        return len(set(self.values())) == 1

    @property
    def is_zero(self) -> bool:
        return not any(self.values())


def _bbox(mask: np.ndarray, pad: tuple[int, ...]) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` voxels per axis, clipped to the array."""
    out = []
    for ax, p in enumerate(pad):
        hit = np.nonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))[0]
        out.append(slice(max(int(hit[0]) - p, 0), min(int(hit[-1]) + p + 1, mask.shape[ax])))
    return tuple(out)


def _dilate_edt(mask: np.ndarray, r: float, sampling: tuple[float, ...]) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    pad = tuple(int(math.ceil(r / s)) + 1 for s in sampling)
    box = _bbox(mask, pad)
    dist = distance_transform_edt(~mask[box], sampling=sampling)
    out = np.zeros_like(mask)
    out[box] = dist <= r + _EPS
    return out


def _erode_edt(mask: np.ndarray, r: float, sampling: tuple[float, ...]) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    box = _bbox(mask, (1,) * mask.ndim)
    sub = np.pad(mask[box], 1)  # outside the image is background
    dist = distance_transform_edt(sub, sampling=sampling)[(slice(1, -1),) * mask.ndim]
    out = np.zeros_like(mask)
    out[box] = dist > r + _EPS
    return out


def structuring_element(margin: Margin, spacing: tuple[float, ...], direction: np.ndarray) -> np.ndarray:
    """Boolean kernel (numpy order k, j, i; centre = no offset) of the octant-ellipsoid element.

    ``margin``: per-direction magnitudes in mm (signs ignored); ``spacing``: (i, j, k) in mm;
    ``direction``: the 3x3 image direction matrix (columns = image axes in LPS).
    """
    r = [abs(v) for v in margin.values()]
    reach = max(r)
    half = [int(math.floor(reach / s + _EPS)) for s in spacing]  # per (i, j, k) axis
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1).astype(float)  # (n, 3) in (i, j, k)
    d = (offsets * np.asarray(spacing, dtype=float)) @ np.asarray(direction, dtype=float).T  # LPS mm
    left, right, anterior, posterior, superior, inferior = r
    ok = np.ones(len(d), dtype=bool)
    norm = np.zeros(len(d))
    for c, (pos, neg) in enumerate(((left, right), (posterior, anterior), (superior, inferior))):
        comp = np.where(np.abs(d[:, c]) < _EPS, 0.0, d[:, c])
        radius = np.where(comp > 0, pos, neg)
        zero = radius <= 0
        ok &= ~(zero & (comp != 0))
        norm += np.where(zero, 0.0, comp / np.where(zero, 1.0, radius)) ** 2
    ok &= norm <= 1.0 + 1e-9
    return ok.reshape([2 * h + 1 for h in half]).transpose(2, 1, 0)  # (i, j, k) -> (k, j, i)


def _dilate_kernel(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Minkowski sum of ``mask`` with the centred ``kernel`` (FFT convolution on the bounding box)."""
    from scipy.signal import fftconvolve

    half = tuple(s // 2 for s in kernel.shape)
    box = _bbox(mask, half)
    conv = fftconvolve(mask[box].astype(np.float32), kernel.astype(np.float32), mode="full")
    # "full" output index p is image index box.start - half + p; keep the part inside the image
    out = np.zeros_like(mask)
    dst, src = [], []
    for ax, b in enumerate(box):
        lo = b.start - half[ax]  # image index of conv index 0
        d0, d1 = max(lo, 0), min(lo + conv.shape[ax], mask.shape[ax])
        dst.append(slice(d0, d1))
        src.append(slice(d0 - lo, d1 - lo))
    out[tuple(dst)] = conv[tuple(src)] > 0.5
    return out


def apply_margin(mask: np.ndarray, margin: Margin, spacing: tuple[float, ...], direction=None) -> np.ndarray:
    """``mask`` (bool, numpy order k, j, i) grown (or shrunk) by ``margin`` (mm).

    ``spacing``: (i, j, k) voxel size in mm, ``direction``: 3x3 direction matrix (identity if
    ``None``); see the module docstring for the method.
    """
    mask = np.asarray(mask, dtype=bool)
    if margin.is_zero or not mask.any():
        return mask.copy()
    sampling = tuple(float(s) for s in spacing[::-1])  # numpy axis order
    values = margin.values()
    if margin.is_isotropic:
        r = values[0]
        return _dilate_edt(mask, r, sampling) if r > 0 else _erode_edt(mask, -r, sampling)
    if min(values) < 0 < max(values):
        raise ValueError(f"per-direction margins must be all >= 0 or all <= 0, got {margin}")
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    kernel = structuring_element(margin, tuple(spacing), direction)
    if max(values) > 0:
        return _dilate_kernel(mask, kernel)
    # erosion by K: x kept iff x + s inside for all s in K  <=>  not (background (+) reflected K)
    pad = tuple(s // 2 for s in kernel.shape)
    box = _bbox(mask, (1,) * mask.ndim)
    sub = np.pad(mask[box], [(p, p) for p in pad])  # outside the image is background
    grown = _dilate_kernel(~sub, kernel[::-1, ::-1, ::-1])
    out = np.zeros_like(mask)
    out[box] = ~grown[tuple(slice(p, p + (b.stop - b.start)) for p, b in zip(pad, box, strict=True))] & mask[box]
    return out
