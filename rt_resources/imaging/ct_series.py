"""A CT series as one volume in HU, with its geometry checked before it is trusted.

Geometry follows the DICOM patient coordinate system (LPS, mm). The volume's direction
columns are the row cosine, the column cosine and their cross product (the slice
normal); slices are ordered by their ImagePositionPatient projected on that normal, so
the origin is the position of the first slice along the normal. Slices must lie within
10 % of the slice spacing of a uniform grid (least-squares fit); small jitter is recorded
in the notes and the fitted grid is used. SimpleITK applies
RescaleSlope/RescaleIntercept, so voxel values are HU.

A series is refused, with the file named, when its slices disagree on orientation,
matrix or pixel spacing, when it is tilted (gantry tilt or sheared positions), when two
slices share a position, or when the slice spacing is inconsistent beyond that limit (a
missing slice would otherwise misplace every structure beyond the gap).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

#: positions may deviate this much (mm) from a perfect stack before we call it uneven/tilted
POSITION_TOLERANCE_MM = 0.01
#: a slice may lie at most this fraction of the slice spacing off the best-fit uniform grid.
#: Real exports jitter (rounded positions, 2.44/2.56 mm steps in a 2.5 mm series); a missing
#: slice puts neighbours about half a spacing off, far above this limit.
SLICE_POSITION_TOLERANCE = 0.10
ORIENTATION_TOLERANCE = 1e-4


class CTSeriesError(ValueError):
    """A CT series whose geometry cannot be trusted, with what is wrong and where."""


@dataclass(frozen=True)
class CTGeometry:
    """Geometry of a validated CT series."""

    paths: list[Path]  #: slice files ordered along the slice normal
    origin_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]  #: (column step, row step, slice step)
    direction: tuple[float, ...]  #: 3x3 row-major; columns are row cosine, column cosine, normal
    size: tuple[int, int, int]  #: (columns, rows, slices)
    sop_instance_uids: list[str]
    notes: list[str]


def _floats(value, n: int, tag: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        arr = np.empty(0)
    if arr.shape != (n,):
        raise CTSeriesError(f"{path}: {tag} is missing or malformed ({value!r})")
    return arr


def validate_ct_series(paths: list[Path]) -> CTGeometry:
    """Read the headers of a CT series (no pixel data) and check its geometry."""
    if not paths:
        raise CTSeriesError("CT series has no files")
    headers = [(Path(p), pydicom.dcmread(p, stop_before_pixels=True)) for p in paths]
    p0, h0 = headers[0]
    iop0 = _floats(h0.get("ImageOrientationPatient"), 6, "ImageOrientationPatient (0020,0037)", p0)
    spacing0 = _floats(h0.get("PixelSpacing"), 2, "PixelSpacing (0028,0030)", p0)
    matrix0 = (int(h0.Rows), int(h0.Columns))
    row_cos, col_cos = iop0[:3], iop0[3:]
    if (
        abs(np.linalg.norm(row_cos) - 1) > 1e-3
        or abs(np.linalg.norm(col_cos) - 1) > 1e-3
        or abs(row_cos @ col_cos) > 1e-3
    ):
        raise CTSeriesError(f"{p0}: ImageOrientationPatient {list(iop0)} is not two orthonormal vectors")
    normal = np.cross(row_cos, col_cos)

    positions = []
    for path, h in headers:
        iop = _floats(h.get("ImageOrientationPatient"), 6, "ImageOrientationPatient (0020,0037)", path)
        if np.max(np.abs(iop - iop0)) > ORIENTATION_TOLERANCE:
            raise CTSeriesError(
                f"mixed orientation: {path} has ImageOrientationPatient {list(iop)}, {p0} has {list(iop0)}"
            )
        if (int(h.Rows), int(h.Columns)) != matrix0:
            raise CTSeriesError(f"{path}: matrix {h.Rows}x{h.Columns} differs from {p0}: {matrix0[0]}x{matrix0[1]}")
        spacing = _floats(h.get("PixelSpacing"), 2, "PixelSpacing (0028,0030)", path)
        if np.max(np.abs(spacing - spacing0)) > 1e-4:
            raise CTSeriesError(f"{path}: PixelSpacing {list(spacing)} differs from {p0}: {list(spacing0)}")
        tilt = float(h.get("GantryDetectorTilt", 0) or 0)
        if abs(tilt) > 1e-3:
            raise CTSeriesError(
                f"{path}: gantry tilt {tilt} deg (0018,1120); tilted series are not supported, "
                "resample it on the scanner or export an untilted reconstruction"
            )
        positions.append(_floats(h.get("ImagePositionPatient"), 3, "ImagePositionPatient (0020,0032)", path))

    positions = np.asarray(positions)
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    positions, along = positions[order], along[order]
    headers = [headers[i] for i in order]
    notes: list[str] = []

    # every slice must lie on the line through the first slice along the normal
    offsets = positions - positions[0] - np.outer(along - along[0], normal)
    worst = int(np.argmax(np.linalg.norm(offsets, axis=1)))
    if np.linalg.norm(offsets[worst]) > POSITION_TOLERANCE_MM + 1e-3 * abs(along[worst] - along[0]):
        raise CTSeriesError(
            f"{headers[worst][0]}: slice is displaced {np.round(offsets[worst], 3).tolist()} mm "
            "perpendicular to the slice normal (gantry tilt or sheared series); not supported"
        )

    origin = positions[0]
    if len(headers) == 1:
        thickness = float(h0.get("SliceThickness") or 0) or 1.0
        step = thickness
        notes.append(f"single-slice series: slice spacing taken from SliceThickness ({step} mm)")
    else:
        gaps = np.diff(along)
        for i, gap in enumerate(gaps):
            if gap < POSITION_TOLERANCE_MM:
                raise CTSeriesError(
                    f"two slices at the same position {along[i]:.3f} mm: {headers[i][0]} and {headers[i + 1][0]}"
                )
        # best-fit uniform grid (least squares); every slice must lie close to its grid plane
        index = np.arange(len(along))
        step, intercept = np.polyfit(index, along, 1)
        deviation = np.abs(along - (intercept + step * index))
        if deviation.max() > SLICE_POSITION_TOLERANCE * step:
            i = int(np.argmax(np.abs(gaps - np.median(gaps))))
            missing = round(gaps[i] / np.median(gaps)) - 1
            what = f"{missing} missing slice(s)" if missing >= 1 else "uneven slice spacing"
            raise CTSeriesError(
                f"{what} between {headers[i][0]} (at {along[i]:.3f} mm) and {headers[i + 1][0]} "
                f"(at {along[i + 1]:.3f} mm): gap {gaps[i]:.3f} mm, typical spacing {np.median(gaps):.3f} mm; "
                f"slices lie up to {deviation.max():.3f} mm off a uniform grid "
                f"(limit {SLICE_POSITION_TOLERANCE:.0%} of the spacing)"
            )
        if deviation.max() > POSITION_TOLERANCE_MM:
            notes.append(
                f"slice positions deviate up to {deviation.max():.3f} mm ({deviation.max() / step:.1%} of the "
                f"{step:.4f} mm spacing) from a uniform grid; the volume uses the least-squares uniform grid"
            )
        origin = positions[0] + (intercept - along[0]) * normal
        step = float(step)

    direction = np.column_stack([row_cos, col_cos, normal])
    return CTGeometry(
        paths=[p for p, _ in headers],
        origin_mm=tuple(float(v) for v in origin),
        # PixelSpacing is (row spacing, column spacing): x step is the column spacing
        spacing_mm=(float(spacing0[1]), float(spacing0[0]), step),
        direction=tuple(float(v) for v in direction.ravel()),
        size=(matrix0[1], matrix0[0], len(headers)),
        sop_instance_uids=[str(h.SOPInstanceUID) for _, h in headers],
        notes=notes,
    )


def read_ct_volume(geometry: CTGeometry):
    """Read the validated series with SimpleITK and return a ``SimpleITK.Image`` in HU.

    Pixels are stored as int16 when every slice's rescale is integral and the HU range
    fits, else float32. The geometry of the result is set from :class:`CTGeometry`
    (our checked values), and SimpleITK's own reading is verified against it.
    """
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in geometry.paths])
    image = reader.Execute()
    array = sitk.GetArrayViewFromImage(image)
    if np.all(np.mod(array, 1) == 0) and array.min() >= -32768 and array.max() <= 32767:
        image = sitk.Cast(image, sitk.sitkInt16)
    else:
        image = sitk.Cast(image, sitk.sitkFloat32)
    if tuple(image.GetSize()) != geometry.size:
        raise CTSeriesError(f"SimpleITK read size {image.GetSize()}, headers say {geometry.size}")
    if np.max(np.abs(np.subtract(image.GetOrigin(), geometry.origin_mm))) > 1e-3 + SLICE_POSITION_TOLERANCE * max(
        geometry.spacing_mm
    ):
        raise CTSeriesError(f"SimpleITK origin {image.GetOrigin()} disagrees with headers {geometry.origin_mm}")
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_mm)
    image.SetDirection(geometry.direction)
    return image
