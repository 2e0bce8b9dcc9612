"""Which planes a CT montage shows: the centre, and the axial, coronal and sagittal slabs through it.

Display conventions: the CT is first reoriented to LPS (``DICOMOrient``), so index i runs to
patient left, j to posterior, k to superior; masks and dose are resampled onto it in physical
space, whatever their own grid or voxel order. Axial planes show patient left on image right and
anterior at the top (radiological convention); coronal and sagittal planes show superior at the
top (sagittal: anterior on the left). Pixel aspect ratios follow the voxel spacing.

The centre is the centroid of the first non-empty manual mask whose ROI name is the target hint
or contains PTV, CTV or GTV (in that order; ``rois.json`` order within a class), else the dose
maximum, else the image centre.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

TARGET_CLASSES = ("PTV", "CTV", "GTV")


def read_3d(path: Path, pixel_type=None, *, orient: bool = False):
    """A SimpleITK image, 2-D files promoted to one slice; reoriented to LPS with ``orient``.

    Only the CT needs reorienting (it defines the displayed grid); masks and dose are
    resampled onto it in physical space, whatever their voxel order.
    """
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path)) if pixel_type is None else sitk.ReadImage(str(path), pixel_type)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{Path(path).name}: {image.GetNumberOfComponentsPerPixel()} components per pixel")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise ValueError(f"{Path(path).name}: {image.GetDimension()}-D image")
    return sitk.DICOMOrient(image, "LPS") if orient else image


def array_view(image) -> np.ndarray:
    """The voxels of a SimpleITK image as a read-only (z, y, x) numpy view."""
    import SimpleITK as sitk

    return sitk.GetArrayViewFromImage(image)


def target_rank(name: str, hint: str | None) -> tuple[int, int] | None:
    """Sort key of a candidate target ROI (lower first), None if it is no target."""
    if hint and name.strip().lower() == hint.strip().lower():
        return (0, 0)
    upper = name.upper()
    for rank, cls in enumerate(TARGET_CLASSES):
        if cls in upper:
            return (1 + rank, 0 if upper.strip() == cls else 1)
    return None


def centroid_mm(image) -> tuple[float, float, float] | None:
    """Physical centroid (LPS mm) of the non-zero voxels, None if there are none."""
    arr = array_view(image)
    nz = np.nonzero(arr)
    if not nz[0].size:
        return None
    k, j, i = (float(np.mean(a)) for a in nz)
    return tuple(float(v) for v in image.TransformContinuousIndexToPhysicalPoint((i, j, k)))


def choose_centre(
    ct, manual: list[tuple[str, str, Any]], dose, target_hint: str | None
) -> tuple[tuple[float, float, float], str]:
    """The montage's centre (LPS mm) and where it comes from: the ROI name, ``"dose max"`` or
    ``"image centre"`` (see the module docstring). ``manual``: ``(roi, source, mask)`` in
    ``rois.json`` order; ``dose``: the dose image or None."""
    ranked = sorted(
        ((rank, n, roi, image) for n, (roi, _, image) in enumerate(manual) if (rank := target_rank(roi, target_hint))),
        key=lambda t: (t[0], t[1]),
    )
    for _, _, roi, image in ranked:
        centre = centroid_mm(image)
        if centre is not None:
            return centre, roi
    if dose is not None:
        k, j, i = np.unravel_index(int(np.argmax(array_view(dose))), array_view(dose).shape)
        return tuple(float(v) for v in dose.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))), "dose max"
    size = ct.GetSize()
    centre = tuple(float(v) for v in ct.TransformContinuousIndexToPhysicalPoint(tuple((n - 1) / 2.0 for n in size)))
    return centre, "image centre"


def centre_index(ct, centre_mm: tuple[float, float, float], notes: list[str]) -> tuple[int, int, int]:
    """The CT voxel (i, j, k) nearest ``centre_mm``, clamped into the image (noted in ``notes``)."""
    size = ct.GetSize()
    cont = ct.TransformPhysicalPointToContinuousIndex(centre_mm)
    index = tuple(int(min(max(round(c), 0), n - 1)) for c, n in zip(cont, size, strict=True))
    if index != tuple(int(round(c)) for c in cont):
        notes.append("target centre outside the CT: planes clamped to its edge")
    return index


@dataclass
class Plane:
    """One displayed plane through the oriented CT: a one-voxel slab and how to show it."""

    name: str
    ref: Any  # SimpleITK.Image, one voxel thick, on the CT grid
    squeeze: Callable[[np.ndarray], np.ndarray]  # (z, y, x) slab array -> (rows, cols)
    aspect: float  # row spacing / column spacing
    origin: str  # "upper": row 0 at the top; "lower": row 0 at the bottom
    labels: tuple[str, str, str, str]  # top, bottom, left, right
    title: str
    index: int
    image: np.ndarray = field(default=None)  # CT pixels (rows, cols)

    def sample(self, image, interpolator, pixel_type, default: float = 0.0) -> np.ndarray:
        """``image`` resampled onto this plane (physical space), as (rows, cols)."""
        import SimpleITK as sitk

        out = sitk.Resample(image, self.ref, sitk.Transform(), interpolator, default, pixel_type)
        return self.squeeze(sitk.GetArrayFromImage(out))


def planes_through(ct, centre_index: tuple[int, int, int]) -> list[Plane]:
    """The axial, coronal and sagittal planes of the LPS-oriented ``ct`` through ``centre_index``."""
    import SimpleITK as sitk

    i, j, k = centre_index
    sx, sy, sz = ct.GetSpacing()
    x, y, z = ct.TransformIndexToPhysicalPoint((i, j, k))
    planes = [
        Plane(
            "axial",
            ct[:, :, k : k + 1],
            lambda a: a[0],
            sy / sx,
            "upper",
            ("A", "P", "R", "L"),
            f"axial  z = {z:.1f} mm",
            k,
        ),
        Plane(
            "coronal",
            ct[:, j : j + 1, :],
            lambda a: a[:, 0, :],
            sz / sx,
            "lower",
            ("S", "I", "R", "L"),
            f"coronal  y = {y:.1f} mm",
            j,
        ),
        Plane(
            "sagittal",
            ct[i : i + 1, :, :],
            lambda a: a[:, :, 0],
            sz / sy,
            "lower",
            ("S", "I", "A", "P"),
            f"sagittal  x = {x:.1f} mm",
            i,
        ),
    ]
    for plane in planes:
        plane.image = plane.squeeze(sitk.GetArrayFromImage(plane.ref)).astype(np.float32)
    return planes
