"""A stand-in for TotalSegmentator's ``total`` model output: an anatomical label map built from the body.

Why it exists
-------------
The official TotalSegmentator weights cannot be downloaded here, so no real organ segmentation of a
CT can be computed on this machine. Everything downstream of the model (masks per class, crop
regions from landmarks, RTSTRUCT export, QC, volumes in the cohort tables, timings on clinical-size
grids) still needs a label map that looks like the model's: about a hundred organ-like structures
with TotalSegmentator's own class names and label numbers, at plausible places and volumes. This
module is that stand-in, at a boundary that cannot exist here. It does not segment anything: the
organs are drawn from a fixed atlas, fitted into the body found in the CT. The real model path
(``rt_resources.segmentation.totalseg``, which runs ``totalsegmentator`` when the weights are
present) is unchanged and never calls this module; it is used only where it is chosen explicitly
(the ``standin`` segmentation backend).

What it produces
----------------
``standin_labelmap(image)`` returns a ``uint8`` label array on exactly the input grid (SimpleITK
array order z, y, x) and TotalSegmentator's label -> class-name map (``class_map["total"]``: 117
classes, read from the installed ``totalsegmentator`` package).

* Body: voxels over ``BODY_HU`` (-500 HU), with everything between the first and last body voxel of
  each image row and each image column counted as body too (so air-filled lungs inside are body).
* Atlas: every class is an ellipsoid or a union of a few overlapping ellipsoids (ribs, vessels,
  vertebrae with pedicles and lamina, colon, ...) laid out in a reference trunk 400 mm wide
  (x), 280 mm deep (y) and 400 mm long (z), from the thyroid and T1 at the top to the femoral
  heads at the bottom. Positions are stretched to the body: the atlas z range maps to the body's
  z extent, and at each height x, y map to that slice's body extent (so an image cropped to the
  thorax gets the whole atlas squeezed into it: a stand-in, not anatomy). Small assemblies
  (vertebra, spinal cord in its canal) are anchored at one placed point and keep their
  millimetres. Sizes stay in millimetres (scaled down only for a body under
  ``FULL_SIZE_BODY_MM``, never below ``MIN_SIZE_SCALE``), so the volumes are realistic and do not
  depend on the grid: the same body on a 1.5 mm, a 0.977 x 0.977 x 2.5 mm and a 2 x 2 x 3 mm grid
  gives the same volumes within 5 % (most within 1 %).
* Coordinates are DICOM/ITK patient coordinates (LPS, mm): +x patient left, +y posterior,
  +z superior, computed from the image's origin, spacing and direction (any orientation), so
  ``*_left`` classes lie on the patient's left.
* A label map has one class per voxel: classes are painted from the smallest (atlas volume) to the
  largest, each only on voxels still free, inside the body and the image; a class keeps its largest
  6-connected component, so every class is one connected piece.
* ``STANDIN_EMPTY_CLASSES`` stay empty, as in a real thorax-abdomen-pelvis scan that does not
  cover the head or neck: brain, skull, vertebrae C1-C7, and the kidney cysts (most patients have
  none). The other 106 classes are present when the body is as large as an adult trunk.

Measured on the realistic synthetic course (``rt_resources.synthetic.REALISTIC``, patient 0: a
368 x 258 mm body, 400 mm long) and on a 500 x 350 x 400 mm ellipsoid: 106 classes from about
3 cc (carotid and subclavian arteries, adrenal glands) to 1.6-1.7 L (liver), 11.5-11.8 L in all;
0.7-1.2 s on the 1.5 mm grid and 1.1-1.5 s on the 512 x 512 x 160 CT, one core (each ellipsoid
is evaluated only inside its own bounding box).

The output is deterministic: it depends on the image only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

#: CT numbers above this (HU) are body (soft tissue, bone; not air or lung)
BODY_HU = -500.0

#: classes the stand-in leaves empty (not covered by a thorax-abdomen-pelvis scan, or absent in most
#: patients), in TotalSegmentator's label order
STANDIN_EMPTY_CLASSES: tuple[str, ...] = (
    "kidney_cyst_left",
    "kidney_cyst_right",
    "vertebrae_C7",
    "vertebrae_C6",
    "vertebrae_C5",
    "vertebrae_C4",
    "vertebrae_C3",
    "vertebrae_C2",
    "vertebrae_C1",
    "brain",
    "skull",
)

# The reference trunk of the atlas (mm): x in [-200, 200], y in [-140, 140], z in [-200, 200].
REF_HALF_WIDTH_MM = 200.0
REF_HALF_DEPTH_MM = 140.0
REF_LENGTH_MM = 400.0
# Atlas sizes are kept for a body at least this wide, deep and long (mm, a small adult trunk) and
# shrink in proportion for a smaller one, never below MIN_SIZE_SCALE.
FULL_SIZE_BODY_MM = (340.0, 240.0, 360.0)
MIN_SIZE_SCALE = 0.6
PROFILE_BIN_MM = 5.0  # height of the slabs in which the body's x/y extent is measured
ROD_CAP = 0.6  # a rod's ellipsoid reaches this fraction of its thinner radius beyond each end point

Vec3 = tuple[float, float, float]


def _mirror(point: Vec3) -> Vec3:
    return (-point[0], point[1], point[2])


def _mirror_anchor(anchor: Vec3 | None) -> Vec3 | None:
    return None if anchor is None else _mirror(anchor)


@dataclass(frozen=True)
class _Blob:
    """Ellipsoid at ``centre`` (reference mm) with ``semi`` axes; the first two turned by ``yaw_deg``
    about z (from +x towards +y).

    Points are placed by stretching the reference trunk to the body (``_BodyFrame.place``). With an
    ``anchor`` only the anchor is placed that way and the offset from it keeps its millimetres, so
    small assemblies (a vertebra around the spinal canal) keep their shape in any body.
    """

    centre: Vec3
    semi: Vec3
    yaw_deg: float = 0.0
    anchor: Vec3 | None = None

    def mirrored(self) -> _Blob:
        return _Blob(_mirror(self.centre), self.semi, 180.0 - self.yaw_deg, _mirror_anchor(self.anchor))

    def ref_volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * self.semi[0] * self.semi[1] * self.semi[2]


@dataclass(frozen=True)
class _Rod:
    """Elongated ellipsoid from ``start`` to ``end`` (reference mm, capped by ``ROD_CAP``); radius
    ``radii[0]`` horizontally across the rod, ``radii[1]`` across both. ``anchors`` of the two end
    points as for ``_Blob``."""

    start: Vec3
    end: Vec3
    radii: tuple[float, float]
    anchors: tuple[Vec3 | None, Vec3 | None] = (None, None)

    def mirrored(self) -> _Rod:
        anchors = (_mirror_anchor(self.anchors[0]), _mirror_anchor(self.anchors[1]))
        return _Rod(_mirror(self.start), _mirror(self.end), self.radii, anchors)

    def ref_volume_mm3(self) -> float:
        half = 0.5 * math.dist(self.start, self.end) + ROD_CAP * min(self.radii)
        return 4.0 / 3.0 * math.pi * half * self.radii[0] * self.radii[1]


_Piece = _Blob | _Rod

# --- the atlas (reference trunk, mm; +x left, +y posterior, +z superior) -------------------------

_SPINE_Y = 55.0  # centre of the vertebral bodies
_CORD_Y = 95.0  # centre of the spinal canal
# posterior (costovertebral) to anterior (costochondral) path of a left rib in the axial plane
_RIB_PATH = ((25.0, 78.0), (80.0, 100.0), (135.0, 65.0), (170.0, 10.0), (150.0, -60.0), (95.0, -105.0), (38.0, -120.0))
_RIB_DROP_MM = 40.0  # the anterior end lies this much below the posterior one


def _chain(
    points: tuple[Vec3, ...], radii: tuple[float, float], anchors: tuple[Vec3 | None, ...] | None = None
) -> tuple[_Piece, ...]:
    """Rods through consecutive ``points`` with a ball at every inner point, so that the joints stay
    as thick as the rods (two bare ellipsoids meet in a neck) and the chain stays connected on a
    coarse grid. ``anchors``: one per point (see ``_Blob``)."""
    anchors = anchors or (None,) * len(points)
    rods = tuple(_Rod(points[k], points[k + 1], radii, (anchors[k], anchors[k + 1])) for k in range(len(points) - 1))
    r = min(radii)
    return rods + tuple(_Blob(points[k], (r, r, r), anchor=anchors[k]) for k in range(1, len(points) - 1))


def _thoracic_z(level: int) -> float:
    return 177.0 - (level - 1) * 15.5


def _vertebra(z: float, height: float, width: float, depth: float) -> tuple[_Piece, ...]:
    """Vertebral body, two pedicles around the spinal canal, and lamina with spinous process, all
    anchored at the centre of the body."""
    anchor = (0.0, _SPINE_Y, z)
    lamina_y = _CORD_Y + 18.0
    body = _Blob(anchor, (width, depth, 0.4 * height), anchor=anchor)
    pedicles = tuple(
        _Rod(
            (side * 14.0, _SPINE_Y + 0.5 * depth, z),
            (side * 14.0, lamina_y, z),
            (4.5, 0.3 * height),
            (anchor, anchor),
        )
        for side in (1.0, -1.0)
    )
    lamina = _Blob((0.0, lamina_y, z), (16.0, 9.0, 0.35 * height), anchor=anchor)
    return (body, *pedicles, lamina)


def _spinal_cord() -> tuple[_Piece, ...]:
    """The cord in the spinal canal from 10 mm above T1 to L1, anchored at each vertebra."""
    levels = [_thoracic_z(level) for level in range(1, 13)] + [-12.0]
    zs = [levels[0] + 10.0, *levels]
    anchors = tuple((0.0, _SPINE_Y, z) for z in [levels[0], *levels])
    return _chain(tuple((0.0, _CORD_Y, z) for z in zs), (6.5, 6.5), anchors)


def _rib(level: int) -> tuple[_Piece, ...]:
    """Left rib ``level`` (1-12): rods along ``_RIB_PATH``, shorter and tighter at the top and bottom."""
    n_points = {1: 7, 2: 7, 8: 6, 9: 6, 10: 6, 11: 4, 12: 3}.get(level, 7)
    scale = {1: 0.72, 2: 0.86}.get(level, 1.0)
    z0 = _thoracic_z(level)
    points = []
    for k, (x, y) in enumerate(_RIB_PATH[:n_points]):
        f = 1.0 if k == 0 else scale
        points.append((f * x, f * y, z0 - _RIB_DROP_MM * k / (len(_RIB_PATH) - 1)))
    return _chain(tuple(points), (5.0, 6.0))


def _left(pieces: tuple[_Piece, ...]) -> tuple[tuple[_Piece, ...], tuple[_Piece, ...]]:
    """(left, right) versions of a structure defined on the patient's left."""
    return pieces, tuple(p.mirrored() for p in pieces)


def _build_atlas() -> dict[str, tuple[_Piece, ...]]:
    atlas: dict[str, tuple[_Piece, ...]] = {}

    def pair(stem: str, pieces: tuple[_Piece, ...]) -> None:
        atlas[f"{stem}_left"], atlas[f"{stem}_right"] = _left(pieces)

    # abdomen
    atlas["spleen"] = (_Blob((120.0, 30.0, 5.0), (25.0, 38.0, 35.0)),)
    atlas["kidney_left"] = (_Blob((90.0, 60.0, -50.0), (28.0, 25.0, 42.0)),)
    atlas["kidney_right"] = (_Blob((-90.0, 60.0, -58.0), (28.0, 25.0, 42.0)),)
    atlas["gallbladder"] = (_Blob((-65.0, -55.0, -35.0), (15.0, 15.0, 28.0)),)
    atlas["liver"] = (_Blob((-70.0, -5.0, 5.0), (100.0, 85.0, 55.0)),)
    atlas["stomach"] = (_Blob((70.0, -45.0, 0.0), (45.0, 38.0, 45.0)),)
    atlas["pancreas"] = (_Rod((-40.0, -22.0, -30.0), (85.0, -5.0, -15.0), (16.0, 11.0)),)
    atlas["adrenal_gland_left"] = (_Blob((45.0, 45.0, 8.0), (10.0, 7.0, 15.0)),)
    atlas["adrenal_gland_right"] = (_Blob((-45.0, 45.0, -2.0), (10.0, 7.0, 15.0)),)
    atlas["esophagus"] = _chain(
        ((-3.0, 30.0, 190.0), (-3.0, 28.0, 45.0), (12.0, 0.0, 25.0), (45.0, -25.0, 5.0)), (8.0, 6.0)
    )
    atlas["trachea"] = (_Rod((0.0, -10.0, 190.0), (0.0, -5.0, 110.0), (11.0, 11.0)),)
    atlas["thyroid_gland"] = (
        _Blob((19.0, -24.0, 176.0), (9.0, 11.0, 17.0)),
        _Blob((-19.0, -24.0, 176.0), (9.0, 11.0, 17.0)),
        _Blob((0.0, -30.0, 174.0), (16.0, 5.0, 6.0)),
    )
    atlas["small_bowel"] = (_Blob((-10.0, -40.0, -105.0), (85.0, 60.0, 50.0)),)
    atlas["duodenum"] = _chain(((-25.0, -30.0, -30.0), (-50.0, -15.0, -60.0), (10.0, -10.0, -72.0)), (15.0, 12.0))
    atlas["colon"] = _chain(
        (
            (-110.0, -5.0, -150.0),
            (-110.0, -20.0, -55.0),
            (110.0, -40.0, -45.0),
            (100.0, -45.0, -135.0),
            (30.0, -15.0, -160.0),
        ),
        (19.0, 19.0),
    )
    atlas["urinary_bladder"] = (_Blob((0.0, -60.0, -165.0), (40.0, 35.0, 30.0)),)
    atlas["prostate"] = (_Blob((0.0, -30.0, -185.0), (20.0, 16.0, 15.0)),)
    # thorax
    atlas["lung_upper_lobe_left"] = (_Blob((95.0, -5.0, 130.0), (60.0, 80.0, 55.0)),)
    atlas["lung_lower_lobe_left"] = (_Blob((95.0, 35.0, 65.0), (58.0, 62.0, 55.0)),)
    atlas["lung_upper_lobe_right"] = (_Blob((-95.0, -5.0, 135.0), (60.0, 80.0, 50.0)),)
    atlas["lung_middle_lobe_right"] = (_Blob((-100.0, -50.0, 75.0), (50.0, 40.0, 28.0)),)
    atlas["lung_lower_lobe_right"] = (_Blob((-95.0, 35.0, 70.0), (58.0, 62.0, 55.0)),)
    atlas["heart"] = (_Blob((25.0, -45.0, 80.0), (60.0, 50.0, 45.0)),)
    atlas["atrial_appendage_left"] = (_Blob((68.0, -40.0, 100.0), (12.0, 10.0, 14.0)),)
    atlas["pulmonary_vein"] = (_Rod((-55.0, 0.0, 95.0), (55.0, 0.0, 95.0), (10.0, 9.0)),)
    # vessels
    atlas["aorta"] = _chain(
        ((20.0, -42.0, 85.0), (20.0, -28.0, 138.0), (30.0, 22.0, 143.0), (28.0, 25.0, -95.0)), (13.0, 13.0)
    )
    atlas["brachiocephalic_trunk"] = (_Rod((12.0, -32.0, 143.0), (-22.0, -22.0, 160.0), (7.0, 7.0)),)
    atlas["subclavian_artery_left"] = (_Rod((25.0, 10.0, 145.0), (75.0, -5.0, 178.0), (6.0, 6.0)),)
    atlas["subclavian_artery_right"] = (_Rod((-22.0, -22.0, 160.0), (-75.0, -5.0, 178.0), (6.0, 6.0)),)
    atlas["common_carotid_artery_left"] = (_Rod((28.0, -20.0, 150.0), (35.0, -12.0, 188.0), (6.5, 6.5)),)
    atlas["common_carotid_artery_right"] = (_Rod((-22.0, -22.0, 162.0), (-35.0, -12.0, 188.0), (6.5, 6.5)),)
    atlas["brachiocephalic_vein_left"] = (_Rod((60.0, -30.0, 162.0), (-10.0, -55.0, 140.0), (8.0, 7.0)),)
    atlas["brachiocephalic_vein_right"] = (_Rod((-45.0, -30.0, 165.0), (-12.0, -55.0, 140.0), (8.0, 7.0)),)
    atlas["superior_vena_cava"] = (_Rod((-12.0, -55.0, 140.0), (-15.0, -45.0, 100.0), (11.0, 11.0)),)
    atlas["inferior_vena_cava"] = (_Rod((-25.0, 20.0, -112.0), (-25.0, 15.0, 32.0), (12.0, 12.0)),)
    atlas["portal_vein_and_splenic_vein"] = _chain(
        ((110.0, 20.0, 0.0), (-10.0, -2.0, -15.0), (-55.0, -15.0, 8.0)), (7.0, 7.0)
    )
    atlas["iliac_artery_left"] = (_Rod((28.0, 22.0, -95.0), (72.0, 0.0, -160.0), (7.0, 7.0)),)
    atlas["iliac_artery_right"] = (_Rod((22.0, 22.0, -95.0), (-70.0, 0.0, -160.0), (7.0, 7.0)),)
    atlas["iliac_vena_left"] = (_Rod((-20.0, 32.0, -112.0), (62.0, 14.0, -168.0), (9.0, 9.0)),)
    atlas["iliac_vena_right"] = (_Rod((-32.0, 30.0, -112.0), (-65.0, 14.0, -170.0), (9.0, 9.0)),)
    # skeleton
    for level in range(1, 13):
        atlas[f"vertebrae_T{level}"] = _vertebra(_thoracic_z(level), 15.5, 14.0 + 0.5 * level, 12.0 + 0.4 * level)
        atlas[f"rib_left_{level}"], atlas[f"rib_right_{level}"] = _left(_rib(level))
    for level in range(1, 6):
        atlas[f"vertebrae_L{level}"] = _vertebra(-12.0 - (level - 1) * 22.0, 22.0, 22.0, 17.0)
    atlas["vertebrae_S1"] = _vertebra(-120.0, 18.0, 24.0, 17.0)
    atlas["sacrum"] = (_Blob((0.0, 78.0, -153.0), (46.0, 22.0, 26.0)),)
    atlas["spinal_cord"] = _spinal_cord()
    atlas["sternum"] = (_Blob((0.0, -118.0, 110.0), (18.0, 9.0, 65.0)),)
    atlas["costal_cartilages"] = _chain(
        ((30.0, -116.0, 140.0), (48.0, -110.0, 38.0), (-48.0, -110.0, 38.0), (-30.0, -116.0, 140.0)), (6.0, 6.0)
    )
    pair("clavicula", (_Rod((15.0, -105.0, 172.0), (125.0, -10.0, 182.0), (9.0, 8.0)),))
    pair("scapula", (_Blob((125.0, 95.0, 120.0), (45.0, 8.0, 55.0), 147.3),))
    pair("humerus", (_Rod((187.0, 15.0, 182.0), (190.0, 22.0, 70.0), (13.0, 13.0)),))
    pair(
        "hip",
        (
            _Blob((92.0, 30.0, -130.0), (60.0, 10.0, 40.0), -46.5),
            _Rod((88.0, 28.0, -150.0), (78.0, 12.0, -182.0), (16.0, 16.0)),
            _Blob((75.0, 10.0, -184.0), (35.0, 30.0, 18.0)),
        ),
    )
    pair(
        "femur",
        (
            _Blob((92.0, 0.0, -178.0), (20.0, 20.0, 20.0)),
            _Rod((92.0, 0.0, -178.0), (118.0, 8.0, -240.0), (14.0, 14.0)),
        ),
    )
    # muscles
    pair("autochthon", (_Rod((42.0, 115.0, 178.0), (42.0, 108.0, -135.0), (24.0, 18.0)),))
    pair("iliopsoas", (_Rod((40.0, 60.0, -15.0), (80.0, 15.0, -190.0), (22.0, 20.0)),))
    pair("gluteus_maximus", (_Blob((85.0, 100.0, -165.0), (55.0, 20.0, 42.0), -22.6),))
    pair("gluteus_medius", (_Blob((140.0, 60.0, -128.0), (40.0, 15.0, 35.0), -48.8),))
    pair("gluteus_minimus", (_Blob((118.0, 42.0, -138.0), (30.0, 9.0, 28.0), -48.8),))
    return atlas


_ATLAS = _build_atlas()


# --- the body and the image geometry -------------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """Voxel index (i, j, k) = (x, y, z) array axes reversed -> patient mm: ``origin + direction @ (spacing * ijk)``."""

    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray
    size: tuple[int, int, int]  # (nx, ny, nz)

    @classmethod
    def of(cls, image: sitk.Image) -> _Geometry:
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError(
                f"the stand-in segmentation needs a 3D scalar CT image (HU); got a {image.GetDimension()}D image "
                f"with {image.GetNumberOfComponentsPerPixel()} component(s) per voxel"
            )
        return cls(
            origin=np.asarray(image.GetOrigin(), dtype=np.float64),
            spacing=np.asarray(image.GetSpacing(), dtype=np.float64),
            direction=np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3),
            size=tuple(int(n) for n in image.GetSize()),  # type: ignore[arg-type]
        )

    def points(self, ijk: np.ndarray) -> np.ndarray:
        """Patient coordinates (N, 3) of voxel indices (N, 3) in (i, j, k) order."""
        return self.origin + (ijk * self.spacing) @ self.direction.T

    def continuous_index(self, points: np.ndarray) -> np.ndarray:
        """Continuous (i, j, k) indices (N, 3) of patient points (N, 3)."""
        return ((points - self.origin) @ np.linalg.inv(self.direction).T) / self.spacing


@dataclass(frozen=True)
class _BodySpans:
    """Per image row (along i) and column (along j): the first and last body voxel (empty: first > last).

    Body = inside both spans, which fills air enclosed by the body (lungs, bowel gas).
    """

    first_i: np.ndarray  # (nz, ny)
    last_i: np.ndarray
    first_j: np.ndarray  # (nz, nx)
    last_j: np.ndarray

    @classmethod
    def of(cls, mask: np.ndarray) -> _BodySpans:
        nz, ny, nx = mask.shape
        any_i = mask.any(axis=2)
        any_j = mask.any(axis=1)
        return cls(
            first_i=np.where(any_i, mask.argmax(axis=2), nx),
            last_i=np.where(any_i, nx - 1 - mask[:, :, ::-1].argmax(axis=2), -1),
            first_j=np.where(any_j, mask.argmax(axis=1), ny),
            last_j=np.where(any_j, ny - 1 - mask[:, ::-1, :].argmax(axis=1), -1),
        )

    def is_empty(self) -> bool:
        return not bool((self.last_i >= self.first_i).any())

    def endpoints(self) -> np.ndarray:
        """(i, j, k) indices (N, 3) of the first and last body voxel of every row and column."""
        k, j = np.nonzero(self.last_i >= self.first_i)
        rows = [np.stack([self.first_i[k, j], j, k], axis=1), np.stack([self.last_i[k, j], j, k], axis=1)]
        k, i = np.nonzero(self.last_j >= self.first_j)
        cols = [np.stack([i, self.first_j[k, i], k], axis=1), np.stack([i, self.last_j[k, i], k], axis=1)]
        return np.concatenate(rows + cols).astype(np.float64)

    def inside(self, box: tuple[slice, slice, slice]) -> np.ndarray:
        """Body mask on ``box`` (array order k, j, i)."""
        sk, sj, si = box
        ii = np.arange(si.start, si.stop)[None, None, :]
        jj = np.arange(sj.start, sj.stop)[None, :, None]
        in_rows = (ii >= self.first_i[sk, sj][:, :, None]) & (ii <= self.last_i[sk, sj][:, :, None])
        in_cols = (jj >= self.first_j[sk, si][:, None, :]) & (jj <= self.last_j[sk, si][:, None, :])
        return in_rows & in_cols


@dataclass(frozen=True)
class _BodyFrame:
    """Where the reference trunk goes: the body's z extent and, per height, its x and y extent (mm)."""

    z_min: float
    z_max: float
    node_z: np.ndarray  # heights at which the extent was measured, ascending
    x_lo: np.ndarray
    x_hi: np.ndarray
    y_lo: np.ndarray
    y_hi: np.ndarray
    size_scale: np.ndarray  # (3,) factor on atlas sizes along x, y, z

    @classmethod
    def of(cls, spans: _BodySpans, geometry: _Geometry) -> _BodyFrame:
        points = geometry.points(spans.endpoints())
        half_voxel = 0.5 * np.abs(geometry.direction) @ geometry.spacing  # voxel centre -> voxel edge
        z = points[:, 2]
        z_min, z_max = float(z.min() - half_voxel[2]), float(z.max() + half_voxel[2])
        n_bins = max(1, math.ceil((z_max - z_min) / PROFILE_BIN_MM))
        bins = np.clip(((z - z_min) / PROFILE_BIN_MM).astype(np.int64), 0, n_bins - 1)
        order = np.argsort(bins, kind="stable")
        bins, points = bins[order], points[order]
        starts = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
        counts = np.diff(np.r_[starts, len(bins)])
        node_z = np.add.reduceat(points[:, 2], starts) / counts
        lo = np.minimum.reduceat(points[:, :2], starts, axis=0) - half_voxel[:2]
        hi = np.maximum.reduceat(points[:, :2], starts, axis=0) + half_voxel[:2]
        extent = [float((hi[:, 0] - lo[:, 0]).max()), float((hi[:, 1] - lo[:, 1]).max()), z_max - z_min]
        scale = np.clip(np.divide(extent, FULL_SIZE_BODY_MM), MIN_SIZE_SCALE, 1.0)
        return cls(z_min, z_max, node_z, lo[:, 0], hi[:, 0], lo[:, 1], hi[:, 1], scale)

    def place(self, ref: Vec3) -> np.ndarray:
        """Patient point (mm) of a reference-trunk point."""
        x, y, z = ref
        pz = 0.5 * (self.z_min + self.z_max) + z / REF_LENGTH_MM * (self.z_max - self.z_min)
        x_lo, x_hi = np.interp(pz, self.node_z, self.x_lo), np.interp(pz, self.node_z, self.x_hi)
        y_lo, y_hi = np.interp(pz, self.node_z, self.y_lo), np.interp(pz, self.node_z, self.y_hi)
        px = 0.5 * (x_lo + x_hi) + x / REF_HALF_WIDTH_MM * 0.5 * (x_hi - x_lo)
        py = 0.5 * (y_lo + y_hi) + y / REF_HALF_DEPTH_MM * 0.5 * (y_hi - y_lo)
        return np.array([px, py, pz])

    def locate(self, ref: Vec3, anchor: Vec3 | None) -> np.ndarray:
        """Patient point (mm) of a reference point, its offset from ``anchor`` (if any) kept in mm."""
        if anchor is None:
            return self.place(ref)
        return self.place(anchor) + self.size_scale * (np.asarray(ref) - np.asarray(anchor))

    def stretch(self, ref: Vec3) -> np.ndarray:
        """How much a reference length along x, y, z becomes in the patient at ``ref`` (position map)."""
        eps = 1.0
        x, y, z = ref
        return np.array(
            [
                (self.place((x + eps, y, z))[0] - self.place((x - eps, y, z))[0]) / (2 * eps),
                (self.place((x, y + eps, z))[1] - self.place((x, y - eps, z))[1]) / (2 * eps),
                (self.place((x, y, z + eps))[2] - self.place((x, y, z - eps))[2]) / (2 * eps),
            ]
        )

    def sized(self, length_mm: float, direction: np.ndarray) -> float:
        """A reference size along the unit vector ``direction``, scaled for this body."""
        return length_mm * float(np.linalg.norm(self.size_scale * direction))

    def ellipsoid(self, piece: _Piece) -> tuple[np.ndarray, np.ndarray]:
        """(centre (3,), axes (3, 3): columns are the semi-axis vectors) of ``piece`` in patient mm."""
        if isinstance(piece, _Blob):
            centre = self.locate(piece.centre, piece.anchor)
            yaw = math.radians(piece.yaw_deg)
            d1 = np.array([math.cos(yaw), math.sin(yaw), 0.0])
            if piece.anchor is None:  # turn with the stretched trunk
                d1 *= self.stretch(piece.centre)
                d1 /= np.linalg.norm(d1)
            d2 = np.array([-d1[1], d1[0], 0.0])
            d3 = np.array([0.0, 0.0, 1.0])
            axes = [self.sized(s, d) * d for s, d in zip(piece.semi, (d1, d2, d3), strict=True)]
            return centre, np.stack(axes, axis=1)
        start, end = self.locate(piece.start, piece.anchors[0]), self.locate(piece.end, piece.anchors[1])
        along = end - start
        length = float(np.linalg.norm(along))
        u = along / length
        across = np.cross(u, [0.0, 0.0, 1.0])
        e1 = across / np.linalg.norm(across) if np.linalg.norm(across) > 1e-9 else np.array([1.0, 0.0, 0.0])
        e2 = np.cross(u, e1)
        r1, r2 = self.sized(piece.radii[0], e1), self.sized(piece.radii[1], e2)
        half = 0.5 * length + ROD_CAP * min(r1, r2)
        return 0.5 * (start + end), np.stack([half * u, r1 * e1, r2 * e2], axis=1)


# --- painting --------------------------------------------------------------------------------------


def _box(centre: np.ndarray, axes: np.ndarray, geometry: _Geometry) -> tuple[slice, slice, slice] | None:
    """Array-order (k, j, i) slices of the voxels whose centres can lie in the ellipsoid; None if off the image."""
    half = np.sqrt((axes**2).sum(axis=1))
    corners = centre + np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    index = geometry.continuous_index(corners)
    lo = np.maximum(np.ceil(index.min(axis=0) - 1e-6).astype(int), 0)
    hi = np.minimum(np.floor(index.max(axis=0) + 1e-6).astype(int), np.asarray(geometry.size) - 1)
    if (lo > hi).any():
        return None
    return slice(lo[2], hi[2] + 1), slice(lo[1], hi[1] + 1), slice(lo[0], hi[0] + 1)


def _inside(centre: np.ndarray, axes: np.ndarray, geometry: _Geometry, box: tuple[slice, slice, slice]) -> np.ndarray:
    """Voxels of ``box`` whose centres lie in the ellipsoid ``centre + axes @ v, |v| <= 1``."""
    inverse = np.linalg.inv(axes)
    gradient = (inverse @ geometry.direction * geometry.spacing).astype(np.float32)  # d v / d(i, j, k)
    offset = (inverse @ (geometry.origin - centre)).astype(np.float32)
    sk, sj, si = box
    k = np.arange(sk.start, sk.stop, dtype=np.float32)[:, None, None]
    j = np.arange(sj.start, sj.stop, dtype=np.float32)[None, :, None]
    i = np.arange(si.start, si.stop, dtype=np.float32)[None, None, :]
    q = np.zeros((sk.stop - sk.start, sj.stop - sj.start, si.stop - si.start), dtype=np.float32)
    for m in range(3):
        v = (offset[m] + gradient[m, 2] * k) + gradient[m, 1] * j + gradient[m, 0] * i
        q += v * v
    return q <= 1.0


def _union_box(boxes: list[tuple[slice, slice, slice]]) -> tuple[slice, slice, slice]:
    return tuple(  # type: ignore[return-value]
        slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3)
    )


def _largest_component(mask: np.ndarray) -> np.ndarray:
    components, n = ndimage.label(mask)
    if n <= 1:
        return mask
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return components == int(sizes.argmax())


def _painting_order(names: dict[int, str]) -> Iterator[tuple[int, str, tuple[_Piece, ...]]]:
    """Non-empty classes from the smallest to the largest atlas volume (ties: label order)."""
    missing = sorted(set(names.values()) - set(_ATLAS) - set(STANDIN_EMPTY_CLASSES))
    if missing:
        raise ValueError(
            f"TotalSegmentator's 'total' class map has classes the stand-in atlas does not know: {missing}; "
            "add them to rt_resources/segmentation/standin.py (atlas or STANDIN_EMPTY_CLASSES)"
        )
    drawn = [(label, name) for label, name in names.items() if name in _ATLAS and name not in STANDIN_EMPTY_CLASSES]
    volume = {name: sum(p.ref_volume_mm3() for p in _ATLAS[name]) for _, name in drawn}
    for label, name in sorted(drawn, key=lambda item: (volume[item[1]], item[0])):
        yield label, name, _ATLAS[name]


def standin_labelmap(image: sitk.Image) -> tuple[np.ndarray, dict[int, str]]:
    """Stand-in for TotalSegmentator ``total`` on ``image`` (a CT in HU, any grid and orientation).

    Returns the label array (``uint8``, SimpleITK array order z, y, x, exactly the input grid; 0 is
    background) and TotalSegmentator's label -> class-name map (all 117 classes, including those
    left empty). See the module docstring for how the organs are placed.
    """
    from totalsegmentator.map_to_binary import class_map

    names = {int(label): str(name) for label, name in class_map["total"].items()}
    geometry = _Geometry.of(image)
    hu = sitk.GetArrayViewFromImage(image)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    spans = _BodySpans.of(hu > BODY_HU)
    if spans.is_empty():
        return labels, names
    frame = _BodyFrame.of(spans, geometry)
    for label, _name, pieces in _painting_order(names):
        placed = []
        for piece in pieces:
            centre, axes = frame.ellipsoid(piece)
            box = _box(centre, axes, geometry)
            if box is not None:
                placed.append((centre, axes, box))
        if not placed:
            continue
        union = _union_box([box for _, _, box in placed])
        mask = np.zeros(tuple(s.stop - s.start for s in union), dtype=bool)
        for centre, axes, box in placed:
            local = tuple(slice(b.start - u.start, b.stop - u.start) for b, u in zip(box, union, strict=True))
            mask[local] |= _inside(centre, axes, geometry, box)
        region = labels[union]
        mask &= region == 0
        mask &= spans.inside(union)
        if mask.any():
            region[_largest_component(mask)] = label
    return labels, names
