"""Anatomical cropping of a CT (and masks on any grid) along the patient superior-inferior axis.

Bounds come from TotalSegmentator v2 ``total`` task masks (keys of ``masks`` are the class names
of ``totalsegmentator.map_to_binary.class_map["total"]``, i.e. the file names without
``.nii.gz``: ``vertebrae_L1``, ``femur_left``, ``clavicula_left`` ...).

Conventions
-----------
* Coordinates are DICOM patient coordinates (LPS) in mm: ``+z`` is patient **superior**. The z of
  a voxel is taken from the image's origin, spacing and direction matrix, so head-first (HFS) and
  feet-first (FFS) images (slice order reversed, z direction flipped) give the same bounds in mm.
* A mask's extent is measured at voxel **centres** (the most superior / inferior centre of a
  non-zero voxel), in the mask's own geometry (masks need not share the CT grid).
* The crop axis of an image is its index axis most aligned with patient z (largest ``|D[2, a]|``).
  The z of a slice is the z of the centre of that slice (middle of the two other axes).
* A slice is kept when its z is within ``[z_min_mm, z_max_mm]`` (1e-3 mm tolerance): a margin of
  10 mm on 3 mm slices therefore keeps the slices up to 9 mm beyond the landmark.
* Bounds beyond the image (outermost slice centres) are clamped to it, and each clamping is
  recorded in :attr:`CropBounds.clamped`.

Region definitions (see :data:`REGIONS`; default margins 10 mm superior and 10 mm inferior):

=========  =========================================================  ===========================================
region     superior landmark (most superior voxel of)                 inferior landmark (most inferior voxel of)
=========  =========================================================  ===========================================
pelvis     vertebrae_L1 top                                           femoral heads: lowest voxel within the top
                                                                      ``FEMORAL_HEAD_MM`` (50 mm) of femur_left /
                                                                      femur_right (never the whole femur)
abdomen    liver / spleen top (diaphragm domes)                       vertebrae_L5 bottom
thorax     clavicula_left/right and the upper lung lobes, top         bottom of the lungs (any of the five lobes)
head_neck  skull top (vertex)                                         clavicula_left/right bottom
brain      skull top (vertex)                                         brain bottom
=========  =========================================================  ===========================================

When a landmark lists several classes (left/right, lobes), each present class gives its own edge
and the most extreme one is used (highest for a superior landmark, lowest for an inferior one):
the crop is the larger one. A landmark is missing when none of its classes has a non-empty mask;
then :class:`LandmarkError` names the region and every missing class. Classes absent while the
landmark is still defined by others are listed in :attr:`CropBounds.notes`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from rt_resources.segmentation.regions import (  # noqa: F401  (re-exported: the crop's vocabulary)
    DEFAULT_MARGIN_MM,
    FEMORAL_HEAD_MM,
    LUNG_LOBES,
    REGIONS,
    Landmark,
    RegionSpec,
)

_TOL_MM = 1e-3


@dataclass
class CropBounds:
    """The crop of one region on one CT.

    ``z_min_mm``/``z_max_mm``: patient z (LPS, mm, +z superior) of the inferior/superior bound,
    after margins and clamping. ``index_range``: ``(start, stop)``, half-open, along the CT's crop
    axis ``axis`` (SimpleITK index order: 0=i, 1=j, 2=k). ``landmarks_mm``: the landmark levels
    before margins. ``clamped``: one line per bound clamped to the image. ``notes``: absent classes
    of landmarks that were still defined by other classes.
    """

    region: str
    z_min_mm: float
    z_max_mm: float
    index_range: tuple[int, int]
    clamped: list[str] = field(default_factory=list)
    axis: int = 2
    landmarks_mm: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class LandmarkError(ValueError):
    """The landmark masks of a region are missing or empty; names the region and the classes."""

    def __init__(self, region: str, missing: list[str], detail: str):
        self.region = region
        self.missing = list(missing)
        super().__init__(f"cannot crop region {region!r}: landmark masks missing or empty: {detail}")


def _direction(image: sitk.Image) -> np.ndarray:
    return np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)


def crop_axis(image: sitk.Image) -> int:
    """Index axis (0, 1 or 2, SimpleITK order) of ``image`` most aligned with patient z."""
    return int(np.argmax(np.abs(_direction(image)[2])))


def slice_z_mm(image: sitk.Image) -> np.ndarray:
    """Patient z (mm) of the centre of every slice along :func:`crop_axis`, in index order."""
    axis = crop_axis(image)
    size = np.asarray(image.GetSize(), dtype=float)
    centre = (size - 1.0) / 2.0
    dz = _direction(image)[2] * np.asarray(image.GetSpacing(), dtype=float)  # z per index step, per axis
    base = image.GetOrigin()[2] + float(np.dot(np.delete(dz, axis), np.delete(centre, axis)))
    return base + dz[axis] * np.arange(image.GetSize()[axis])


def _voxel_z_mm(mask: sitk.Image) -> np.ndarray:
    """Patient z (mm) of the centres of the non-zero voxels of ``mask``."""
    arr = sitk.GetArrayViewFromImage(mask)
    k, j, i = np.nonzero(arr)
    dz = _direction(mask)[2] * np.asarray(mask.GetSpacing(), dtype=float)
    return mask.GetOrigin()[2] + dz[0] * i + dz[1] * j + dz[2] * k


def landmark_z_mm(landmark: Landmark, masks: dict[str, sitk.Image]) -> tuple[float | None, list[str]]:
    """Level (patient z, mm) of ``landmark`` and its classes absent or empty in ``masks``.

    The level is ``None`` when every class is absent or empty.
    """
    levels, absent = [], []
    for name in landmark.classes:
        z = _voxel_z_mm(masks[name]) if name in masks else np.empty(0)
        if z.size == 0:
            absent.append(name)
            continue
        if landmark.top_mm is not None:
            z = z[z >= z.max() - landmark.top_mm - _TOL_MM]
        levels.append(float(z.max() if landmark.edge == "top" else z.min()))
    if not levels:
        return None, absent
    return (max(levels) if landmark.edge == "top" else min(levels)), absent


def _margins(spec: RegionSpec, margins: dict | None) -> tuple[float, float]:
    sup, inf = spec.margin_sup_mm, spec.margin_inf_mm
    if margins:
        unknown = set(margins) - {"superior", "inferior"}
        if unknown:
            raise ValueError(f"region {spec.name!r}: unknown margin keys {sorted(unknown)} (use superior, inferior)")
        sup = float(margins.get("superior", sup))
        inf = float(margins.get("inferior", inf))
    for side, value in (("superior", sup), ("inferior", inf)):
        if not math.isfinite(value):
            raise ValueError(f"region {spec.name!r}: {side} margin must be a finite number of mm, got {value}")
    return sup, inf


def _slice_range(z: np.ndarray, z_min: float, z_max: float) -> tuple[int, int]:
    keep = np.nonzero((z >= z_min - _TOL_MM) & (z <= z_max + _TOL_MM))[0]
    if keep.size == 0:
        return 0, 0
    return int(keep.min()), int(keep.max()) + 1


def crop_bounds(region: str, masks: dict[str, sitk.Image], ct: sitk.Image, margins: dict | None = None) -> CropBounds:
    """Bounds of ``region`` on ``ct`` from TotalSegmentator ``masks`` (class name -> mask image).

    ``margins``: optional ``{"superior": mm, "inferior": mm}`` overriding the region's defaults
    (:data:`REGIONS`); a positive margin widens the crop. Raises :class:`LandmarkError` when a
    landmark has no non-empty mask, ``ValueError`` for an unknown region, bad margins, or bounds
    that leave no slice of ``ct``.
    """
    if region not in REGIONS:
        raise ValueError(f"unknown crop region {region!r}; known: {sorted(REGIONS)}")
    spec = REGIONS[region]
    margin_sup, margin_inf = _margins(spec, margins)

    z_sup, absent_sup = landmark_z_mm(spec.superior, masks)
    z_inf, absent_inf = landmark_z_mm(spec.inferior, masks)
    missing, details = [], []
    for side, landmark, z, absent in (
        ("superior", spec.superior, z_sup, absent_sup),
        ("inferior", spec.inferior, z_inf, absent_inf),
    ):
        if z is None:
            missing += [n for n in absent if n not in missing]
            details.append(f"{', '.join(absent)} ({side} bound: {landmark.describe()})")
    if missing:
        raise LandmarkError(region, missing, "; ".join(details))
    notes = [
        f"{side} landmark {lm.describe()}: {', '.join(absent)} missing or empty, used the other classes"
        for side, lm, absent in (("superior", spec.superior, absent_sup), ("inferior", spec.inferior, absent_inf))
        if absent
    ]

    want_max, want_min = z_sup + margin_sup, z_inf - margin_inf
    if want_max <= want_min:
        raise ValueError(
            f"region {region!r}: superior bound {want_max:.1f} mm is not above inferior bound {want_min:.1f} mm"
        )
    z = slice_z_mm(ct)
    img_min, img_max = float(z.min()), float(z.max())
    clamped = []
    z_max, z_min = want_max, want_min
    if want_max > img_max + _TOL_MM:
        clamped.append(f"superior bound {want_max - img_max:.1f} mm beyond the image: clamped to {img_max:.1f} mm")
        z_max = img_max
    if want_min < img_min - _TOL_MM:
        clamped.append(f"inferior bound {img_min - want_min:.1f} mm beyond the image: clamped to {img_min:.1f} mm")
        z_min = img_min
    start, stop = _slice_range(z, z_min, z_max)
    if stop <= start:
        raise ValueError(
            f"region {region!r}: bounds [{want_min:.1f}, {want_max:.1f}] mm leave no slice of the CT "
            f"(slices span [{img_min:.1f}, {img_max:.1f}] mm)"
        )
    return CropBounds(
        region=region,
        z_min_mm=float(z_min),
        z_max_mm=float(z_max),
        index_range=(start, stop),
        clamped=clamped,
        axis=crop_axis(ct),
        landmarks_mm={"superior": float(z_sup), "inferior": float(z_inf)},
        notes=notes,
    )


def crop_image(image: sitk.Image, bounds: CropBounds) -> sitk.Image:
    """``image`` restricted to the slices whose patient z is within the bounds (mm).

    The slices are selected in ``image``'s own geometry (so a mask on another grid is cropped to
    the same patient z range; on the CT's grid this is exactly ``bounds.index_range``). Spacing,
    direction and pixel type are kept; the origin moves to the first kept slice. Raises
    ``ValueError`` when no slice of ``image`` lies within the bounds.
    """
    axis = crop_axis(image)
    start, stop = _slice_range(slice_z_mm(image), bounds.z_min_mm, bounds.z_max_mm)
    if stop <= start:
        raise ValueError(
            f"region {bounds.region!r}: no slice of the image within [{bounds.z_min_mm:.1f}, {bounds.z_max_mm:.1f}] mm"
        )
    size = list(image.GetSize())
    index = [0, 0, 0]
    size[axis], index[axis] = stop - start, start
    return sitk.RegionOfInterest(image, size, index)


def landmark_classes(region: str) -> list[str]:
    """TotalSegmentator class names the bounds of ``region`` may use."""
    spec = REGIONS[region]
    return list(dict.fromkeys(spec.superior.classes + spec.inferior.classes))


def read_landmark_masks(folder: Path, region: str) -> dict[str, sitk.Image]:
    """The landmark masks of ``region`` that exist in ``folder`` (``<class>.nii.gz``), by class name."""
    out = {}
    for name in landmark_classes(region):
        path = Path(folder) / f"{name}.nii.gz"
        if path.is_file():
            out[name] = sitk.ReadImage(str(path))
    return out
