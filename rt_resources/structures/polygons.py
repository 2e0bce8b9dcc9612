"""Areas and volumes enclosed by planar contours, by the even-odd rule of the masks.

:func:`even_odd_area` is exact for disjoint and nested polygons and falls back to a fine
scan-line fill (:func:`rt_resources.structures.rasterize.fill_polygons`) when polygons cross;
:func:`contour_volume_cc` stacks the plane areas with the contour DVH's slab thicknesses.
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np

_PLANE_DECIMALS = 3  # contour planes grouped by z rounded to 1 um, as the contour DVH does
_NON_AXIAL_MM = 0.01


def contour_volume_cc(contours: list[np.ndarray], single_plane_mm: float) -> float:
    """Volume (cc) enclosed by axial contours: each plane's even-odd area times its slab
    thickness (:func:`rt_resources.dvh.sampling.plane_thicknesses`, the contour DVH's convention)."""
    from rt_resources.dvh.sampling import plane_thicknesses

    planes: dict[float, list[np.ndarray]] = defaultdict(list)
    for c in contours:
        if np.ptp(c[:, 2]) > _NON_AXIAL_MM:
            raise ValueError("contour is not axial (z varies)")
        planes[round(float(c[0, 2]), _PLANE_DECIMALS)].append(np.asarray(c[:, :2], float))
    if not planes:
        return 0.0
    zs = np.array(sorted(planes))
    thickness = plane_thicknesses(zs, single_plane_mm)
    return float(sum(even_odd_area(planes[z]) * t for z, t in zip(zs, thickness, strict=True))) / 1000.0


def even_odd_area(polygons: list[np.ndarray]) -> float:
    """Area (mm^2) inside an odd number of ``polygons`` (the masks' even-odd rule).

    Exact for disjoint and nested polygons (an inner contour is a hole, a contour inside a
    hole an island): each polygon's area counts with the sign of its nesting depth. Polygons
    that cross or touch (or whose bounding boxes overlap without nesting) fall back to a fine
    scan-line fill of the plane (about 250,000 cells).
    """
    areas = [abs(_shoelace(p)) for p in polygons]
    if len(polygons) == 1:
        return areas[0]
    lo = np.array([p.min(axis=0) for p in polygons])
    hi = np.array([p.max(axis=0) for p in polygons])
    depth = np.zeros(len(polygons), int)
    for a in range(len(polygons)):
        for b in range(len(polygons)):
            if a == b or np.any(hi[b] < lo[a]) or np.any(lo[b] > hi[a]):
                continue  # disjoint boxes
            inside = _points_in_polygon(polygons[b], polygons[a])
            if inside.all():
                depth[b] += 1
            elif not _points_in_polygon(polygons[a], polygons[b]).all():
                return _raster_area(polygons)  # overlapping, not nested
    return float(sum(area * (-1) ** d for area, d in zip(areas, depth, strict=True)))


def _shoelace(p: np.ndarray) -> float:
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))


def _points_in_polygon(points: np.ndarray, poly: np.ndarray) -> np.ndarray:
    """Even-odd point-in-polygon for many points (ray to +x)."""
    x, y = points[:, 0][:, None], points[:, 1][:, None]
    x0, y0 = poly[:, 0][None, :], poly[:, 1][None, :]
    x1, y1 = np.roll(poly[:, 0], -1)[None, :], np.roll(poly[:, 1], -1)[None, :]
    crosses = (y0 <= y) != (y1 <= y)
    with np.errstate(divide="ignore", invalid="ignore"):
        xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return (np.sum(crosses & (x < xc), axis=1) % 2).astype(bool)


def _raster_area(polygons: list[np.ndarray], cells: int = 250_000) -> float:
    from rt_resources.structures.rasterize import fill_polygons

    lo = np.min([p.min(axis=0) for p in polygons], axis=0)
    hi = np.max([p.max(axis=0) for p in polygons], axis=0)
    step = max(math.sqrt(float(np.prod(np.maximum(hi - lo, 1e-3))) / cells), 1e-3)
    nx, ny = (np.ceil((hi - lo) / step).astype(int) + 2).tolist()
    inside = fill_polygons([(p - lo) / step - 0.5 for p in polygons], (ny, nx))
    return float(np.count_nonzero(inside)) * step * step
