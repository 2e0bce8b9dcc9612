"""Agreement of a manual and an automatic mask of one organ: Dice, surface distances, volumes.

Both masks are SimpleITK images of 0/1 voxels, as the project stores them
(``masks/<source>/<roi>.nii.gz``, uint8), usually but not always on the CT grid. Geometry comes
from each image (origin, spacing, direction cosines; DICOM patient coordinates, mm).

Conventions
-----------
* **Common grid: the manual one.** Dice and the surface distances are computed on the manual
  mask's voxel lattice (its spacing and direction). An auto mask on the same lattice (same
  spacing and direction, origin a whole number of voxels away; within
  :data:`POSITION_TOLERANCE_MM` at every corner of its grid) is used as it is. On any other grid
  it is resampled onto the manual lattice with nearest neighbour (each manual voxel centre takes
  the value of the auto voxel it lies in; SimpleITK ``Resample``, which handles any direction
  cosines, so differing directions are resampled, not refused), and :attr:`Agreement.note` says
  so. Where the auto mask reaches beyond the manual image, the lattice is extended to cover it:
  no auto voxel is lost.
* **Crop.** Both masks are cut to the union of their bounding boxes plus :data:`MARGIN_VOXELS`
  of background on every side before surfaces and distance maps are computed, so an organ costs
  in proportion to its box, not to the CT. The margin also matters for correctness: SimpleITK's
  ``LabelContour`` does not count voxels on the image border as contour.
* **Surfaces.** A mask's surface is its set of boundary voxels: foreground voxels with at least
  one background face neighbour (SimpleITK ``LabelContour``, ``fullyConnected=False``). Every
  surface voxel counts once (no surface-area weighting, unlike the surfels of DeepMind's
  ``surface-distance``): on an anisotropic grid a face across the coarse axis has more voxels per
  mm^2 than a face along it (2.5 times on 1 x 1 x 2.5 mm) and weighs more in HD95 and the mean.
* **Distances.** From every surface voxel of one mask to the nearest surface voxel of the other,
  centre to centre, in mm with the image spacing (anisotropic spacing included): the absolute
  value of SimpleITK ``SignedMaurerDistanceMap(squaredDistance=False, useImageSpacing=True)`` of
  the other mask's surface (exact Euclidean distance transform; Maurer, Qi & Raghavan, IEEE PAMI
  25(2), 2003).
* **Pooled, symmetric.** The distances of both directions (manual to auto and auto to manual)
  are pooled into one set. ``hd95_mm`` is its 95th percentile (``numpy.percentile``, linear
  interpolation), as MedPy's ``hd95``. It is *not* the maximum of the two directed 95th
  percentiles (DeepMind's ``compute_robust_hausdorff``, MONAI's default), which is at least
  as large (up to interpolation). The two differ when one mask has a part the other lacks that
  covers more than 5 % of its own surface but less than 5 % of the pooled one
  (``tests/agreement`` pins the convention on such a case). ``msd_mm`` is the mean of the pooled
  set, the average symmetric surface distance of Heimann et al. (IEEE TMI 28(8), 2009);
  ``hd_max_mm`` its maximum, the Hausdorff distance.
* **Volumes.** ``manual_cc`` and ``auto_cc`` are each mask's voxel count times its voxel volume
  on its own grid, before any resampling; ``volume_ratio = auto_cc / manual_cc``.
* **Empty masks** never raise. Both empty: Dice, distances and volume ratio NaN (undefined).
  One empty: Dice 0 (``2|M & A| / (|M| + |A|)`` is defined), distances NaN (no surface to
  measure to), volume ratio 0 (auto empty) or NaN (manual empty). An auto mask that has voxels
  on its own grid but none on the manual lattice (thinner than a manual voxel) counts as empty
  there; the note says so. Masks on overlapping grids that do not overlap each other are scored:
  Dice 0, finite distances.
* **Refused** (:class:`AgreementError`): an image that is not a 3-D single-component integer
  image of 0/1 values; grids that do not overlap in space at all (their bounding boxes in patient
  coordinates are disjoint). The images carry no Frame of Reference UID, so disjoint grids are the
  one sign of masks from different frames (or a different course) that can be seen here.

Cost (measured on a 2-core machine under another CI run's load): a 512 x 512 x 200 CT grid
(0.977 x 0.977 x 2.5 mm) with a 200 cc sphere shifted 3 mm takes 0.04 s a pair, both masks on
that grid or the auto one resampled from a 1.5 mm grid (334^3); surfaces and distance maps of the
whole grid, which the crop avoids, took 5-6 s a pair. About 100 organs: some 4 s a course.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

#: background voxels kept around the union bounding box of the two masks
MARGIN_VOXELS = 2
#: an auto grid is on the manual lattice when its corners lie this close (mm) to manual voxel centres
POSITION_TOLERANCE_MM = 0.01
#: the percentile of the pooled surface distances reported as ``hd95_mm``
HD_PERCENTILE = 95.0
RESAMPLED_NOTE = "auto resampled onto the manual grid (nearest neighbour)"


class AgreementError(ValueError):
    """Two masks that cannot be compared, with what is wrong and what to do."""


@dataclass(frozen=True)
class Agreement:
    """Agreement of an automatic mask with a manual one (conventions: module docstring)."""

    dice: float  #: 2|M & A| / (|M| + |A|) on the manual lattice; NaN when both are empty
    hd95_mm: float  #: 95th percentile of the pooled symmetric surface distances
    msd_mm: float  #: mean of the pooled symmetric surface distances
    hd_max_mm: float  #: maximum of the pooled surface distances (Hausdorff distance)
    volume_ratio: float  #: auto_cc / manual_cc, each on its own grid
    manual_cc: float
    auto_cc: float
    note: str  #: resampling and empty masks, "; "-separated; "" when there is nothing to say


@dataclass(frozen=True)
class _Mask:
    image: sitk.Image
    array: np.ndarray  #: (z, y, x) view of the image's voxels
    count: int  #: foreground voxels
    lo: np.ndarray | None  #: (x, y, z) index of the bounding box's first voxel; None when empty
    hi: np.ndarray | None  #: (x, y, z) index of its last voxel (inclusive)

    @property
    def cc(self) -> float:
        return self.count * float(np.prod(self.image.GetSpacing())) / 1000.0


def agreement(manual: sitk.Image, auto: sitk.Image) -> Agreement:
    """Dice, pooled symmetric surface distances (HD95, mean, max, in mm) and volumes of ``auto``
    against ``manual``, on the manual mask's lattice (conventions: module docstring).

    Raises :class:`AgreementError` for an image that is not a 3-D 0/1 integer mask and for grids
    that do not overlap in space; empty masks give NaN where a value is undefined, never an error.
    """
    m = _mask(manual, "manual")
    a = _mask(auto, "auto")
    _check_grids_overlap(manual, auto)
    notes: list[str] = []
    ratio = a.cc / m.cc if m.count else math.nan
    if not m.count and not a.count:
        return _result(math.nan, None, ratio, m, a, ["manual and auto masks both empty"])

    offset = _lattice_offset(manual, auto)
    lo, hi = _union_box(m, a, offset, manual)
    m_box = _take(m.array, np.zeros(3, dtype=int), lo, hi)
    if offset is not None:
        a_box = _take(a.array, offset, lo, hi)
    else:
        a_box = _resample(auto, manual, lo, hi)
        notes.append(RESAMPLED_NOTE)

    n_m, n_a = int(np.count_nonzero(m_box)), int(np.count_nonzero(a_box))
    if not n_m:
        notes.append("manual mask empty")
    if not n_a:
        notes.append("auto mask empty" if not a.count else "auto mask empty on the manual grid (thinner than a voxel)")
    overlap = int(np.count_nonzero(m_box & a_box))
    dice = 2.0 * overlap / (n_m + n_a) if n_m + n_a else math.nan
    distances = None
    if n_m and n_a:
        if not overlap:
            notes.append("masks do not overlap (Dice 0)")
        distances = _surface_distances(m_box, a_box, manual.GetSpacing())
    return _result(dice, distances, ratio, m, a, notes)


def _result(dice: float, distances: np.ndarray | None, ratio: float, m: _Mask, a: _Mask, notes: list[str]) -> Agreement:
    if distances is None:
        hd95 = msd = hd_max = math.nan
    else:
        hd95 = float(np.percentile(distances, HD_PERCENTILE))
        msd, hd_max = float(distances.mean()), float(distances.max())
    return Agreement(dice, hd95, msd, hd_max, ratio, m.cc, a.cc, "; ".join(notes))


# --------------------------------------------------------------------------- masks


def _mask(image: sitk.Image, role: str) -> _Mask:
    """The image's voxels checked to be a 0/1 mask, with their count and bounding box."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise AgreementError(
            f"{role} mask: a {image.GetDimension()}-D image with {image.GetNumberOfComponentsPerPixel()} "
            "components per voxel; expected a 3-D single-component 0/1 mask (masks/<source>/<roi>.nii.gz)"
        )
    arr = sitk.GetArrayViewFromImage(image)
    if not np.issubdtype(arr.dtype, np.integer):
        raise AgreementError(
            f"{role} mask: pixel type {image.GetPixelIDTypeAsString()}; expected an integer 0/1 mask (uint8): "
            "threshold a probability map first"
        )
    slice_max = arr.reshape(arr.shape[0], -1).max(axis=1)  # one pass over the image; the rest is the organ's slab
    low = int(arr.min()) if np.issubdtype(arr.dtype, np.signedinteger) else 0
    if low < 0 or int(slice_max.max()) > 1:
        raise AgreementError(
            f"{role} mask: values from {low} to {int(slice_max.max())}; expected 0 and 1 only: "
            "a label map holds several organs, pass one organ's mask (label == value)"
        )
    slices = np.flatnonzero(slice_max)
    if not slices.size:
        return _Mask(image, arr, 0, None, None)
    slab = arr[slices[0] : slices[-1] + 1]
    rows = np.flatnonzero(slab.max(axis=(0, 2)))
    cols = np.flatnonzero(slab.max(axis=(0, 1)))
    lo = np.array([cols[0], rows[0], slices[0]])
    hi = np.array([cols[-1], rows[-1], slices[-1]])
    return _Mask(image, arr, int(np.count_nonzero(slab)), lo, hi)


def _take(arr: np.ndarray, offset: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The box ``lo..hi`` (x, y, z, inclusive, in the reference lattice) of ``arr`` (z, y, x),
    whose voxel (i, j, k) is the reference voxel (i, j, k) + ``offset``; 0 outside ``arr``."""
    out = np.zeros(tuple(int(n) for n in (hi - lo + 1)[::-1]), dtype=np.uint8)
    size = np.array(arr.shape[::-1])
    src_lo = np.maximum(lo - offset, 0)
    src_hi = np.minimum(hi - offset, size - 1)
    if np.any(src_lo > src_hi):
        return out
    dst_lo = src_lo + offset - lo
    dst_hi = dst_lo + src_hi - src_lo
    out[dst_lo[2] : dst_hi[2] + 1, dst_lo[1] : dst_hi[1] + 1, dst_lo[0] : dst_hi[0] + 1] = arr[
        src_lo[2] : src_hi[2] + 1, src_lo[1] : src_hi[1] + 1, src_lo[0] : src_hi[0] + 1
    ]
    return out


def _resample(auto: sitk.Image, manual: sitk.Image, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """``auto`` on the box ``lo..hi`` of the manual lattice, nearest neighbour, 0 outside it."""
    ref = sitk.Image([int(n) for n in hi - lo + 1], sitk.sitkUInt8)
    ref.SetSpacing(manual.GetSpacing())
    ref.SetDirection(manual.GetDirection())
    ref.SetOrigin(tuple(float(v) for v in _to_mm(manual, lo[None, :].astype(float))[0]))
    out = sitk.Resample(auto, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return sitk.GetArrayFromImage(out)


def _surface_distances(m_box: np.ndarray, a_box: np.ndarray, spacing_mm: tuple[float, ...]) -> np.ndarray:
    """Pooled distances (mm) of each mask's surface voxels to the other mask's surface."""
    surfaces, maps = [], []
    for box in (m_box, a_box):
        image = sitk.GetImageFromArray(box)
        image.SetSpacing(spacing_mm)  # distances need the spacing only; directions are orthonormal
        surface = sitk.LabelContour(image, fullyConnected=False, backgroundValue=0)
        distance = sitk.SignedMaurerDistanceMap(
            surface, insideIsPositive=False, squaredDistance=False, useImageSpacing=True, backgroundValue=0
        )
        on_surface = sitk.GetArrayViewFromImage(surface) > 0
        surfaces.append(on_surface)
        # exactly 0 on the surface itself (the filter leaves ~1e-6 mm there with non-integer spacing)
        maps.append(np.where(on_surface, 0.0, np.abs(sitk.GetArrayViewFromImage(distance))))
    manual_to_auto = maps[1][surfaces[0]]
    auto_to_manual = maps[0][surfaces[1]]
    return np.concatenate([manual_to_auto, auto_to_manual]).astype(np.float64)


# --------------------------------------------------------------------------- geometry


def _to_mm(image: sitk.Image, index: np.ndarray) -> np.ndarray:
    """Patient coordinates (N, 3) of continuous (x, y, z) indices (N, 3)."""
    matrix = np.array(image.GetDirection(), dtype=float).reshape(3, 3) * np.array(image.GetSpacing())
    return np.array(image.GetOrigin()) + index @ matrix.T


def _to_index(image: sitk.Image, points_mm: np.ndarray) -> np.ndarray:
    """Continuous (x, y, z) indices (N, 3) of patient coordinates (N, 3)."""
    matrix = np.array(image.GetDirection(), dtype=float).reshape(3, 3) * np.array(image.GetSpacing())
    return (points_mm - np.array(image.GetOrigin())) @ np.linalg.inv(matrix).T


def _corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The 8 corners (8, 3) of the box ``lo..hi``."""
    return np.array(
        [[(lo, hi)[c][axis] for axis, c in enumerate(pick)] for pick in itertools.product((0, 1), repeat=3)]
    )


def _extent_mm(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Bounding box in patient coordinates of the grid's voxels (their outer faces)."""
    size = np.array(image.GetSize(), dtype=float)
    corners = _to_mm(image, _corners(np.full(3, -0.5), size - 0.5))
    return corners.min(axis=0), corners.max(axis=0)


def _check_grids_overlap(manual: sitk.Image, auto: sitk.Image) -> None:
    m_lo, m_hi = _extent_mm(manual)
    a_lo, a_hi = _extent_mm(auto)
    if np.any(m_hi < a_lo - POSITION_TOLERANCE_MM) or np.any(a_hi < m_lo - POSITION_TOLERANCE_MM):

        def span(lo: np.ndarray, hi: np.ndarray) -> str:
            return " x ".join(f"[{a:.1f}, {b:.1f}]" for a, b in zip(lo, hi, strict=True))

        raise AgreementError(
            f"the grids do not overlap: manual spans {span(m_lo, m_hi)} mm, auto {span(a_lo, a_hi)} mm "
            "(patient x, y, z); they are not in one frame of reference: compare masks of the same course and CT"
        )


def _lattice_offset(manual: sitk.Image, auto: sitk.Image) -> np.ndarray | None:
    """The manual index (x, y, z) of the auto voxel (0, 0, 0) when the auto grid lies on the
    manual lattice (every corner within :data:`POSITION_TOLERANCE_MM` of a manual voxel centre,
    index axes parallel and equally spaced); None when it must be resampled."""
    corners = _corners(np.zeros(3), np.array(auto.GetSize(), dtype=float) - 1)
    in_manual = _to_index(manual, _to_mm(auto, corners))
    offset = np.round(in_manual[0])
    error_mm = np.linalg.norm((in_manual - corners - offset) * np.array(manual.GetSpacing()), axis=1).max()
    return offset.astype(int) if error_mm <= POSITION_TOLERANCE_MM else None


def _union_box(m: _Mask, a: _Mask, offset: np.ndarray | None, manual: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """The union of both masks' bounding boxes on the manual lattice, plus the margin; it may
    reach beyond the manual image (negative indices, or past its size)."""
    los, his = [], []
    if m.count:
        los.append(m.lo)
        his.append(m.hi)
    if a.count:
        if offset is not None:
            los.append(a.lo + offset)
            his.append(a.hi + offset)
        else:  # every manual voxel centre that can fall in an auto foreground voxel
            box = _to_index(manual, _to_mm(a.image, _corners(a.lo - 0.5, a.hi + 0.5)))
            los.append(np.floor(box.min(axis=0)).astype(int))
            his.append(np.ceil(box.max(axis=0)).astype(int))
    lo = np.min(los, axis=0) - MARGIN_VOXELS
    hi = np.max(his, axis=0) + MARGIN_VOXELS
    return lo.astype(int), hi.astype(int)
