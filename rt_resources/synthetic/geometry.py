"""Image grids in DICOM patient coordinates (LPS, millimetres).

DICOM patient coordinates: +x towards the patient's left, +y posterior, +z superior
(head).  A grid is described the DICOM way: ``origin`` is the ImagePositionPatient
of the first slice/frame (centre of its first voxel), ``row_dir``/``col_dir`` are the
two ImageOrientationPatient direction cosines (row_dir is the direction of increasing
column index) and slices/frames are stacked along ``normal = row_dir x col_dir``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# ImageOrientationPatient (row cosine, column cosine) for each patient position.
ORIENTATIONS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    "HFS": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "FFS": ((-1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
    "HFP": ((-1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
    "FFP": ((1.0, 0.0, 0.0), (0.0, -1.0, 0.0)),
}

Vec3 = tuple[float, float, float]


@dataclass(frozen=True)
class Grid:
    """A regular 3D grid of voxel centres.

    ``shape`` is (slices, rows, columns); ``spacing`` is (column spacing along
    ``row_dir``, row spacing along ``col_dir``, slice spacing along ``normal``), mm.
    DICOM PixelSpacing is therefore ``[spacing[1], spacing[0]]``.
    """

    origin: Vec3
    row_dir: Vec3
    col_dir: Vec3
    spacing: Vec3
    shape: tuple[int, int, int]

    @property
    def normal(self) -> np.ndarray:
        """Unit slice normal, row_dir x col_dir."""
        return np.cross(np.asarray(self.row_dir), np.asarray(self.col_dir))

    @property
    def orientation(self) -> list[float]:
        """The six ImageOrientationPatient values."""
        return [*self.row_dir, *self.col_dir]

    def slice_position(self, k: int) -> np.ndarray:
        """ImagePositionPatient (mm) of slice ``k`` (0-based)."""
        return np.asarray(self.origin) + k * self.spacing[2] * self.normal

    def slice_points(self, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient x, y, z (mm) of every voxel centre in slice ``k``; arrays (rows, cols)."""
        _, rows, cols = self.shape
        r = np.arange(rows, dtype=np.float64)[:, None]
        c = np.arange(cols, dtype=np.float64)[None, :]
        p0 = self.slice_position(k)
        out = []
        for axis in range(3):
            out.append(p0[axis] + c * self.spacing[0] * self.row_dir[axis] + r * self.spacing[1] * self.col_dir[axis])
        return out[0], out[1], out[2]

    def points(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Patient x, y, z (mm) of every voxel centre; arrays (slices, rows, cols)."""
        per_slice = [self.slice_points(k) for k in range(self.shape[0])]
        return tuple(np.stack([p[axis] for p in per_slice]) for axis in range(3))  # type: ignore[return-value]


def centred_grid(
    centre: Vec3,
    shape: tuple[int, int, int],
    spacing: Vec3,
    patient_position: str,
) -> Grid:
    """A grid of ``shape`` (slices, rows, cols) whose geometric centre is ``centre`` (mm)."""
    row_dir, col_dir = ORIENTATIONS[patient_position]
    n, rows, cols = shape
    normal = np.cross(np.asarray(row_dir), np.asarray(col_dir))
    origin = (
        np.asarray(centre, dtype=np.float64)
        - (cols - 1) / 2 * spacing[0] * np.asarray(row_dir)
        - (rows - 1) / 2 * spacing[1] * np.asarray(col_dir)
        - (n - 1) / 2 * spacing[2] * normal
    )
    origin = np.round(origin, 6) + 0.0  # drop -0.0 and float fuzz so DS strings are exact
    return Grid(
        origin=(float(origin[0]), float(origin[1]), float(origin[2])),
        row_dir=row_dir,
        col_dir=col_dir,
        spacing=spacing,
        shape=shape,
    )
