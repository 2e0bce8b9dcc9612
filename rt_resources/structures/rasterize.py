"""Rasterize planar contours onto an image grid (the CT's), giving binary masks.

Each contour point is mapped to continuous voxel indices with the grid's origin, spacing
and direction (so any patient position and orientation is handled by the geometry, not by
special cases). A contour belongs to the slice whose index is nearest (it should lie on
one: contours are drawn on CT slices); a voxel is inside when its centre is inside the
polygons by the even-odd rule (:func:`fill_polygons`), so several contours on one slice
combine by XOR and an inner contour cuts a hole, the common convention of planning systems.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: a contour more than this fraction of a slice off the nearest slice plane is reported
OFF_PLANE_TOLERANCE = 0.25


@dataclass
class MaskResult:
    mask: np.ndarray  #: uint8 (z, y, x), the SimpleITK array order
    n_contours_used: int
    notes: list[str] = field(default_factory=list)


def physical_to_index(points_mm: np.ndarray, origin, spacing, direction) -> np.ndarray:
    """Continuous (i, j, k) indices of patient points on a grid."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    return (np.asarray(points_mm, float) - np.asarray(origin, float)) @ d / np.asarray(spacing, float)


def fill_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """Pixels of an ``(ny, nx)`` grid whose centre is inside ``polygons`` (even-odd rule).

    Vertices are ``(x, y)`` in pixel index units (pixel centres at integers). A scanline
    fill: for each row centre, the crossings of every polygon edge toggle the parity of
    the pixels to their right; cost O(rows x edges), independent of the polygon's area.
    """
    ny, nx = shape
    inside = np.zeros((ny, nx + 1), dtype=np.int32)
    for poly in polygons:
        x0, y0 = poly[:, 0], poly[:, 1]
        x1, y1 = np.roll(x0, -1), np.roll(y0, -1)
        lo, hi = np.minimum(y0, y1), np.maximum(y0, y1)
        rows = np.arange(max(0, int(np.ceil(lo.min()))), min(ny, int(np.floor(hi.max())) + 1))
        if rows.size == 0:
            continue
        r = rows[:, None].astype(float)
        crosses = (lo[None, :] <= r) & (r < hi[None, :])  # half-open: a vertex on a row counts once
        ri, ei = np.nonzero(crosses)
        yr = rows[ri].astype(float)
        x = x0[ei] + (yr - y0[ei]) * (x1[ei] - x0[ei]) / (y1[ei] - y0[ei])
        col = np.clip(np.floor(x).astype(np.int64) + 1, 0, nx)  # first pixel centre right of the crossing
        np.add.at(inside, (rows[ri], col), 1)
    return (np.cumsum(inside, axis=1)[:, :nx] % 2).astype(bool)


def rasterize_contours(contours: list[np.ndarray], reference) -> MaskResult:
    """Binary mask of ``contours`` on the grid of SimpleITK image ``reference``."""
    nx, ny, nz = reference.GetSize()
    mask = np.zeros((nz, ny, nx), dtype=bool)
    notes: list[str] = []
    used = 0
    outside = off_plane = 0
    for points in contours:
        ijk = physical_to_index(points, reference.GetOrigin(), reference.GetSpacing(), reference.GetDirection())
        k_float = float(np.mean(ijk[:, 2]))
        k = int(round(k_float))
        if np.ptp(ijk[:, 2]) > OFF_PLANE_TOLERANCE:
            notes.append(f"a contour is not parallel to the image slices (spans {np.ptp(ijk[:, 2]):.2f} slices)")
        if not 0 <= k < nz:
            outside += 1
            continue
        if abs(k_float - k) > OFF_PLANE_TOLERANCE:
            off_plane += 1
        mask[k] ^= fill_polygons([ijk[:, :2]], (ny, nx))
        used += 1
    if outside:
        notes.append(f"{outside} contour(s) lie outside the image's slices and were not rasterized")
    if off_plane:
        notes.append(f"{off_plane} contour(s) lie between slices; each was put on the nearest slice")
    return MaskResult(mask.astype(np.uint8), used, notes)
