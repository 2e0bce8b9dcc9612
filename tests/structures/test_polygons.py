"""Areas and volumes enclosed by contours: even-odd rule (holes, islands, crossings), contour DVH slabs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rt_resources.structures.polygons import contour_volume_cc, even_odd_area
from rt_resources.structures.rasterize import fill_polygons


def test_even_odd_area_of_holes_islands_and_crossings():
    def square(c, h):
        return np.array([[c[0] - h, c[1] - h], [c[0] + h, c[1] - h], [c[0] + h, c[1] + h], [c[0] - h, c[1] + h]])

    outer, hole, island = square((0, 0), 10), square((0, 0), 5), square((0, 0), 2)
    assert even_odd_area([outer]) == pytest.approx(400)
    assert even_odd_area([outer, hole]) == pytest.approx(300)
    assert even_odd_area([hole, outer, island]) == pytest.approx(316)
    assert even_odd_area([outer, square((30, 0), 5)]) == pytest.approx(500)
    # two overlapping squares: XOR = both areas minus twice the overlap (a 10 x 20 strip)
    crossing = even_odd_area([outer, square((10, 0), 10)])
    assert crossing == pytest.approx(400 + 400 - 2 * 200, rel=0.01)
    # the rasterizer's even-odd rule agrees on a fine grid
    polys = [outer, square((10, 0), 10)]
    step = 0.05
    grid = fill_polygons([(p + 25) / step - 0.5 for p in polys], (1000, 1000))
    assert grid.sum() * step**2 == pytest.approx(crossing, rel=0.01)


def test_contour_volume_uses_the_contour_dvh_slabs():
    theta = np.linspace(0, 2 * np.pi, 721)[:-1]
    circle = np.column_stack([20 * np.cos(theta), 20 * np.sin(theta)])
    contours = [np.column_stack([circle, np.full(len(circle), z)]) for z in (0.0, 3.0, 6.0, 9.0)]
    # 4 slabs of 3 mm (no end-capping), each pi r^2
    assert contour_volume_cc(contours, 3.0) == pytest.approx(4 * 3 * math.pi * 400 / 1000, rel=1e-4)
    assert contour_volume_cc(contours[:1], 2.5) == pytest.approx(2.5 * math.pi * 400 / 1000, rel=1e-4)
