"""Auto-segmentation masks (NIfTI on the CT grid) exported as a DICOM RTSTRUCT.

The structure set is built with pydicom, with the modules and items rt-utils 1.2.7
(``RTStructBuilder``) writes: study/patient attributes copied from the CT, the
ReferencedFrameOfReferenceSequence -> RTReferencedStudySequence -> RTReferencedSeriesSequence
-> ContourImageSequence pointing at every CT slice (sorted as rt-utils sorts them: ascending
ImagePositionPatient . (row cosine x column cosine)), and per ROI the StructureSetROI
(ROIGenerationAlgorithm AUTOMATIC), RTROIObservation (RTROIInterpretedType ORGAN) and
ROIContour items (rt-utils' display colours). The CT files are read header only
(``stop_before_pixels``) and never written. The RTSTRUCT is written atomically.

* **Mask layout.** A SimpleITK array is ``(z, y, x)`` in whatever order the NIfTI's axes run;
  DICOM pixels are (row, column) of a slice. The mapping is derived from geometry, not
  assumed, once per series: each DICOM slice's ImagePositionPatient is mapped to a CT-volume
  index (its slice), and the pixel steps along a row and down a column (ImageOrientationPatient
  x PixelSpacing) to signed unit steps of the volume's index axes. Any patient position, and
  any axis order/flip of the NIfTI, is handled by the same code.
* **Contour geometry.** rt-utils 1.2.7 traces the centres of the boundary pixels
  (``cv2.findContours``), so a voxel on the boundary lies *on* its contour and the
  "centre inside the polygon" rule (our rasterizer, and most planning systems) drops or keeps
  it by rounding: a 2880-voxel block came back as 2480 voxels (Dice 0.93). It also scales the
  column step by the row spacing (PixelSpacing is row spacing, column spacing; rt-utils issue
  #92), which distorts non-square pixels. So each contour here is the 0.5 iso-line of the mask
  slice (marching squares, low values fully connected): every vertex lies midway between an
  inside and an outside pixel centre, no centre lies on a contour, and rasterizing the
  RTSTRUCT back onto the CT gives the mask voxel for voxel. Collinear vertices are dropped.
  Holes are separate contours (even-odd rule), as rt-utils writes them. Each contour lies in
  its slice's own plane (that slice's ImagePositionPatient), and references that slice.
  ContourData is rounded to 4 decimals (0.1 um; DS values are at most 16 characters).

Cost (``benchmarks/rtstruct_export.py``; results in ``benchmarks/results/rtstruct_export_2core.txt``).
The version before (commit 8fd045e) let rt-utils load the CT with its pixels, gathered every mask
into rt-utils' layout (a fancy-indexed copy of the volume), let rt-utils trace contours that were
then replaced, and ran marching squares and a Python polygon simplification on whole slices:
seconds per clinical-size mask. Now the CT is read header only and mapped once per series; a mask
is read once (in slabs, see :data:`SLAB_BYTES`); its bounding box comes from two max-reductions
of the array; only the box's part of the slices it reaches is traced, all slices of a slab in one
vectorized pass (:func:`_trace_iso_lines`); the points are formatted as DS text in bulk and each
ROI's ContourSequence is encoded once as bytes (Implicit VR Little Endian, whose 4-byte lengths
have no 64 KiB limit on ContourData), which pydicom writes as they are. Reading the masks is most
of what is left. With ``workers > 1`` and enough masks (:data:`MIN_MASKS_PER_WORKER`) the masks
are read and traced in the project's process pool (:func:`rt_resources.parallel.run_pool`:
spawned workers, largest file first); this process reads the CT headers and assembles and writes
the dataset. The output does not depend on ``workers``. Measured on 100 masks of 2 cc to 2 l on a
512 x 512 x 150 CT, 2 shared cores (load average 4-5): 8fd045e 236-327 s (extrapolated from 10
masks), rt-utils' own writer 22-28 s, this 4.8-5.6 s in process and 4.5-4.7 s with 2 workers.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import struct
from collections.abc import Iterator
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.charset import convert_encodings, default_encoding
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ImplicitVRLittleEndian, RTStructureSetStorage, generate_uid

from rt_resources.fileio import atomic_path

#: a slice's ImagePositionPatient may lie this fraction of the slice spacing off the volume's
#: slice plane (the CT volume is a least-squares uniform grid; its reader allows 10 % jitter)
SLICE_INDEX_TOLERANCE = 0.25
#: in-plane, positions must agree with the volume's grid to this fraction of a pixel
INPLANE_INDEX_TOLERANCE = 0.05
#: the volume's index steps of one DICOM row/column step must be unit steps to this tolerance
AXIS_TOLERANCE = 1e-3
#: masks must share the CT image's grid: origin (mm), spacing (mm) and direction to this tolerance
GRID_TOLERANCE = 1e-3
#: ContourData decimals (mm): 0.1 um, far below any pixel; keeps each DS value under 16 characters
CONTOUR_DECIMALS = 4
#: each worker of a pool gets at least this many masks, and fewer than twice as many run in this
#: process: a spawned worker takes 0.5-1 s to start (imports), a clinical-size mask 20-60 ms
MIN_MASKS_PER_WORKER = 16

#: ROI display colours, as rt-utils 1.2.7 assigns them (``COLOR_PALETTE[(number - 1) % 21]``)
DISPLAY_COLOURS = (
    (255, 0, 255), (0, 235, 235), (255, 255, 0), (255, 0, 0), (0, 132, 255), (0, 240, 0), (255, 175, 0),
    (0, 208, 255), (180, 255, 105), (255, 20, 147), (160, 32, 240), (0, 255, 127), (255, 114, 0),
    (64, 224, 208), (0, 178, 47), (220, 20, 60), (238, 130, 238), (218, 165, 32), (255, 140, 190),
    (0, 0, 255), (255, 225, 0),
)  # fmt: skip
#: Study Component Management SOP Class, the RTReferencedStudySequence's ReferencedSOPClassUID (as rt-utils)
STUDY_COMPONENT_SOP_CLASS = "1.2.840.10008.3.1.2.3.1"
MANUFACTURER = "rtpipeline"
MODEL_NAME = "rt_resources.structures.export"

#: what a CT file must have to be referenced and mapped
_IMAGE_KEYWORDS = (
    "SOPClassUID", "SOPInstanceUID", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows",
    "Columns",
)  # fmt: skip
#: copied from the CT's first slice when present (General Study, Patient, Equipment)
_COPIED_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientAge", "PatientSize", "PatientWeight",
    "StudyDate", "StudyTime", "StudyID", "StudyDescription", "AccessionNumber", "ReferringPhysicianName",
    "InstitutionName",
)  # fmt: skip
#: type 2 attributes: present, empty when the CT lacks them
_TYPE2_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName",
)  # fmt: skip

_CONTOUR_IMAGE_SEQUENCE = BaseTag(0x30060016)
_CONTOUR_SEQUENCE = BaseTag(0x30060040)


class RTStructExportError(ValueError):
    """Masks, CT image and CT series that do not fit together, with what is wrong."""


@dataclass(frozen=True)
class _Grid:
    size: tuple[int, int, int]  #: (x, y, z) sizes, SimpleITK order
    origin: np.ndarray
    spacing: np.ndarray
    direction: np.ndarray  #: 3x3, columns are the index axes' directions

    def to_index(self, vectors_mm: np.ndarray) -> np.ndarray:
        """Continuous index displacements (i, j, k) of displacement vectors (rows, mm)."""
        return np.linalg.solve(self.direction, np.atleast_2d(vectors_mm).T).T / self.spacing


def _read_grid(path: Path) -> _Grid:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    if reader.GetDimension() != 3:
        raise RTStructExportError(f"{path}: expected a 3-D image, got {reader.GetDimension()}-D")
    return _Grid(
        size=tuple(int(v) for v in reader.GetSize()),
        origin=np.asarray(reader.GetOrigin(), float),
        spacing=np.asarray(reader.GetSpacing(), float),
        direction=np.asarray(reader.GetDirection(), float).reshape(3, 3),
    )


def _check_same_grid(grid: _Grid, ct: _Grid, path: Path) -> None:
    problems = []
    if grid.size != ct.size:
        problems.append(f"size {grid.size} vs {ct.size}")
    if np.max(np.abs(grid.origin - ct.origin)) > GRID_TOLERANCE:
        problems.append(f"origin {grid.origin.tolist()} vs {ct.origin.tolist()}")
    if np.max(np.abs(grid.spacing - ct.spacing)) > GRID_TOLERANCE:
        problems.append(f"spacing {grid.spacing.tolist()} vs {ct.spacing.tolist()}")
    if np.max(np.abs(grid.direction - ct.direction)) > GRID_TOLERANCE:
        problems.append(f"direction {grid.direction.ravel().tolist()} vs {ct.direction.ravel().tolist()}")
    if problems:
        raise RTStructExportError(f"{path}: mask is not on the CT image's grid: " + "; ".join(problems))


@dataclass(frozen=True)
class _SliceMap:
    """Where the DICOM slices' pixels are, in the CT volume's indices and in patient coordinates (mm).

    Pixel (row r, column c) of sorted slice s is CT volume index ``base[s] + c*col_step + r*row_step``
    and patient point ``position_mm[s] + c*col_mm[s] + r*row_mm[s]``.
    """

    base: np.ndarray  #: (slices, 3) int
    col_step: np.ndarray  #: (3,) int, index step of one column (along the row cosine)
    row_step: np.ndarray  #: (3,) int, index step of one row (along the column cosine)
    rows: int
    columns: int
    position_mm: np.ndarray  #: (slices, 3) ImagePositionPatient
    col_mm: np.ndarray  #: (slices, 3) patient displacement of one column step
    row_mm: np.ndarray  #: (slices, 3) patient displacement of one row step

    @property
    def slice_axis(self) -> int:
        return int(np.flatnonzero((self.col_step == 0) & (self.row_step == 0))[0])

    @property
    def row_axis(self) -> int:
        return int(np.flatnonzero(self.row_step)[0])

    @property
    def col_axis(self) -> int:
        return int(np.flatnonzero(self.col_step)[0])


def _unit_step(v: np.ndarray, what: str) -> np.ndarray:
    step = np.rint(v)
    if np.abs(step).sum() != 1 or np.max(np.abs(v - step)) > AXIS_TOLERANCE:
        raise RTStructExportError(
            f"one DICOM {what} step is {np.round(v, 4).tolist()} voxels of the CT image, not a step along one of "
            "its axes: the CT image is not on the DICOM series' grid (resampled or reoriented?)"
        )
    return step.astype(np.int64)


def _floats(ds: Dataset, keyword: str) -> np.ndarray:
    return np.asarray([float(v) for v in ds[keyword].value], float)


def _slice_map(series: Seq[Dataset], ct: _Grid) -> _SliceMap:
    """Map the sorted slices and their pixels onto the CT volume's indices, from geometry alone."""
    first = series[0]
    iop = _floats(first, "ImageOrientationPatient")
    row_spacing, col_spacing = _floats(first, "PixelSpacing")
    rows, columns = int(first.Rows), int(first.Columns)
    # PixelSpacing is (spacing between rows, spacing between columns): moving one column
    # goes along the row cosine by the column spacing, one row along the column cosine by the row spacing
    col_step = _unit_step(ct.to_index(iop[:3] * col_spacing)[0], "column")
    row_step = _unit_step(ct.to_index(iop[3:] * row_spacing)[0], "row")
    if np.any((col_step != 0) & (row_step != 0)):
        raise RTStructExportError("the DICOM row and column steps map to the same CT image axis")
    slice_axis = int(np.flatnonzero((col_step == 0) & (row_step == 0))[0])
    inplane = [a for a in range(3) if a != slice_axis]

    base, positions, col_mm, row_mm = [], [], [], []
    for ds in series:
        iop_s = _floats(ds, "ImageOrientationPatient")
        if np.max(np.abs(iop_s - iop)) > AXIS_TOLERANCE:
            raise RTStructExportError(f"slice {ds.SOPInstanceUID}: ImageOrientationPatient differs from the series'")
        if (int(ds.Rows), int(ds.Columns)) != (rows, columns):
            raise RTStructExportError(
                f"slice {ds.SOPInstanceUID}: matrix {ds.Rows}x{ds.Columns} differs from the series' {rows}x{columns}"
            )
        ipp = _floats(ds, "ImagePositionPatient")
        idx = ct.to_index(ipp - ct.origin)[0]
        rounded = np.rint(idx)
        if (
            abs(idx[slice_axis] - rounded[slice_axis]) > SLICE_INDEX_TOLERANCE
            or np.max(np.abs(idx[inplane] - rounded[inplane])) > INPLANE_INDEX_TOLERANCE
        ):
            raise RTStructExportError(
                f"slice {ds.SOPInstanceUID} at ImagePositionPatient {ipp.tolist()} is at CT image index "
                f"{np.round(idx, 3).tolist()}, not on the image's grid"
            )
        base.append(rounded.astype(np.int64))
        positions.append(ipp)
        rs, cs = _floats(ds, "PixelSpacing")
        col_mm.append(iop_s[:3] * cs)
        row_mm.append(iop_s[3:] * rs)
    base = np.asarray(base)
    if len(np.unique(base[:, slice_axis])) != len(base):
        raise RTStructExportError("two DICOM slices map to the same CT image slice")
    size = np.asarray(ct.size)
    last_col, last_row = (columns - 1) * col_step, (rows - 1) * row_step
    for corner in (0, last_col, last_row, last_col + last_row):
        idx = base + corner
        if np.any(idx < 0) or np.any(idx >= size):
            raise RTStructExportError(f"the DICOM slices reach outside the CT image (size {ct.size})")
    return _SliceMap(
        base=base,
        col_step=col_step,
        row_step=row_step,
        rows=rows,
        columns=columns,
        position_mm=np.asarray(positions),
        col_mm=np.asarray(col_mm),
        row_mm=np.asarray(row_mm),
    )


# --------------------------------------------------------------------------- contours (worker side)

#: (row, column) steps of the four directions east, south, west, north; turning left from
#: direction d gives (d + 3) % 4, turning right (d + 1) % 4
_STEPS = np.array([[0, 1], [1, 0], [0, -1], [-1, 0]])


def _trace_iso_lines(stack: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The closed 0.5 iso-lines of every slice of a binary ``(slices, rows, columns)`` stack.

    ``stack`` must be zero on its first and last row and column. Returns ``(slice_of, starts,
    vertices)``: contour n lies on slice ``slice_of[n]`` and has the ``(row, column)`` vertices
    ``vertices[starts[n]:starts[n + 1]]`` (padded coordinates, pixel centres at integers).

    Marching squares at 0.5 on a binary image puts a vertex at the midpoint of every *crack*
    (the pixel edge between an inside and an outside 4-neighbour) and joins the midpoints of
    consecutive cracks along the boundary. So the cracks are followed instead, with the inside
    on the left: at a crack's end, with the two pixels ahead (left-ahead, right-ahead), turn
    left if left-ahead is outside, go straight if only right-ahead is outside, else turn right.
    Turning left at a saddle (diagonal inside pixels) keeps the inside pixels apart, which is
    marching squares with low values fully connected (scikit-image's default). Vectorized:
    each crack's successor is looked up among the sorted crack keys, the cycles of that
    permutation are labelled by their smallest key and ranked by pointer jumping, and vertices
    where the outline goes straight on are dropped (exact: coordinates are multiples of 0.5).
    The contours come out ordered by slice, then by their first pixel.
    """
    _, rows, columns = stack.shape
    flat = stack.ravel()
    step = _STEPS[:, 0] * columns + _STEPS[:, 1]  # linear index step of each direction
    # key = 4 * (linear index of the crack's inside pixel) + direction
    down = np.flatnonzero((stack[:, :-1, :] ^ stack[:, 1:, :]).ravel())  # pixel | pixel below
    down += (down // ((rows - 1) * columns)) * columns
    across = np.flatnonzero((stack[:, :, :-1] ^ stack[:, :, 1:]).ravel())  # pixel | pixel to the right
    across += across // (columns - 1)
    keys = np.concatenate(
        [
            np.where(flat[down], 4 * down + 0, 4 * (down + columns) + 2),  # inside above: east, below: west
            np.where(flat[across], 4 * across + 3, 4 * (across + 1) + 1),  # inside left: north, right: south
        ]
    )
    keys.sort()
    n = keys.size
    pixel, d = np.divmod(keys, 4)
    right = (d + 1) % 4
    ahead = pixel + step[d]
    right_ahead = ahead + step[right]
    successor = np.where(
        ~flat[ahead],
        4 * pixel + (d + 3) % 4,
        np.where(~flat[right_ahead], 4 * ahead + d, 4 * right_ahead + right),
    )
    nxt = np.searchsorted(keys, successor)
    index = np.arange(n)
    # each cycle's smallest index: after k rounds, the minimum over the next 2**k cracks;
    # a round that changes nothing means 2**k covers the longest cycle
    first, jump = index, nxt
    while True:
        wider = np.minimum(first, first[jump])
        if np.array_equal(wider, first):
            break
        first, jump = wider, jump[jump]
    # rank: cracks left to the end of the cycle (cut before its first crack), by pointer jumping
    last = nxt == first
    jump = np.where(last, index, nxt)
    remaining = (~last).astype(np.int64)
    while True:
        further = jump[jump]
        if np.array_equal(further, jump):
            break
        remaining += remaining[jump]
        jump = further
    length = np.bincount(first, minlength=n)
    heads = np.flatnonzero(length)
    offset = np.cumsum(length) - length
    order = np.empty(n, np.int64)
    order[offset[first] + length[first] - 1 - remaining] = index
    # vertices: crack midpoints, the inside pixel + half a step to its right, in doubled coordinates
    plane = pixel % (rows * columns)
    twice = np.stack([2 * (plane // columns) + _STEPS[right, 0], 2 * (plane % columns) + _STEPS[right, 1]], axis=1)
    previous = np.empty(n, np.int64)
    previous[nxt] = index
    into, out = twice - twice[previous], twice[nxt] - twice
    straight = (into[:, 0] * out[:, 1] == into[:, 1] * out[:, 0]) & ((into * out).sum(axis=1) > 0)
    keep = ~straight[order]
    kept = np.add.reduceat(keep.astype(np.int64), offset[heads]) if n else np.zeros(0, np.int64)
    starts = np.concatenate([[0], np.cumsum(kept)])
    return pixel[heads] // (rows * columns), starts, twice[order[keep]] / 2.0


def _element(tag: int, value: bytes) -> bytes:
    """A data element in Implicit VR Little Endian: group, element, 4-byte length, value (even length)."""
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def _sequence_item(content: bytes) -> bytes:
    """An item of defined length (FFFE,E000) holding ``content``."""
    return struct.pack("<HHI", 0xFFFE, 0xE000, len(content)) + content


def _even(text: str, pad: bytes = b" ") -> bytes:
    value = text.encode("ascii")
    return value + pad if len(value) % 2 else value


_CLOSED_PLANAR = _element(0x30060042, _even("CLOSED_PLANAR"))


def _image_item(ds: Dataset) -> bytes:
    """An encoded ContourImageSequence item referencing the slice ``ds`` (SOP class and instance UIDs)."""
    return _sequence_item(
        _element(0x00081150, _even(str(ds.SOPClassUID), b"\0"))
        + _element(0x00081155, _even(str(ds.SOPInstanceUID), b"\0"))
    )


@dataclass(frozen=True)
class _SeriesGeometry:
    """What a worker needs: the slice map and, per sorted slice, the encoded ContourImageSequence of a contour on it."""

    slice_map: _SliceMap
    image_references: tuple[bytes, ...]

    @classmethod
    def of(cls, series: Seq[Dataset], slice_map: _SliceMap) -> _SeriesGeometry:
        return cls(slice_map, tuple(_element(_CONTOUR_IMAGE_SEQUENCE, _image_item(ds)) for ds in series))


def _bounding_box(volume_zyx: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """``(lo, hi)`` inclusive (i, j, k) index bounds of the non-zero voxels, or None when there are none."""
    if volume_zyx.dtype.kind not in "bu":  # signed or float labels: non-zero, not positive
        volume_zyx = volume_zyx != 0
    nz = volume_zyx.shape[0]
    ks = np.flatnonzero(volume_zyx.reshape(nz, -1).max(axis=1))
    if not ks.size:
        return None
    plane = volume_zyx[ks[0] : ks[-1] + 1].max(axis=0)  # (y, x)
    js = np.flatnonzero(plane.max(axis=1))
    is_ = np.flatnonzero(plane.max(axis=0))
    return np.array([is_[0], js[0], ks[0]]), np.array([is_[-1], js[-1], ks[-1]])


def _slab_contours(volume_zyx: np.ndarray, start_ijk: np.ndarray, geometry: _SeriesGeometry) -> list[tuple[int, bytes]]:
    """``(sorted slice, encoded ContourSequence item)`` of every contour of a mask slab.

    ``volume_zyx`` is a block of the mask (SimpleITK order) whose first voxel is at CT image
    index ``start_ijk``; it holds whole slices. The non-zero voxels' bounding box is cut out
    of the DICOM slices it reaches (clipped to each slice's pixels), padded by one voxel,
    oriented as (slice, row axis, column axis) and traced; box indices go to DICOM (row,
    column) and then to each slice's own plane in patient mm.
    """
    box = _bounding_box(volume_zyx)
    if box is None:
        return []
    lo, hi = box[0] + start_ijk, box[1] + start_ijk  # CT image indices
    sm = geometry.slice_map
    a_s, a_r, a_c = sm.slice_axis, sm.row_axis, sm.col_axis
    s_r, s_c = int(sm.row_step[a_r]), int(sm.col_step[a_c])
    chosen = np.flatnonzero((sm.base[:, a_s] >= lo[a_s]) & (sm.base[:, a_s] <= hi[a_s]))
    if not chosen.size:
        return []
    local_lo, local_hi = lo - start_ijk, hi - start_ijk
    index: list[object] = [None, None, None]
    index[a_s] = sm.base[chosen, a_s] - start_ijk[a_s]
    index[a_r] = slice(local_lo[a_r], local_hi[a_r] + 1)
    index[a_c] = slice(local_lo[a_c], local_hi[a_c] + 1)
    # (slice, along the row axis, along the column axis); one index array keeps its axis' place
    box_src = volume_zyx.transpose(2, 1, 0)[tuple(index)].transpose(a_s, a_r, a_c)
    stack = np.zeros((len(chosen), box_src.shape[1] + 2, box_src.shape[2] + 2), bool)
    stack[:, 1:-1, 1:-1] = box_src != 0
    # a slice's pixels span base + sign * [0, n - 1] along each in-plane axis; box pixels outside
    # them (a CT image larger than the series) are not on the slice and do not count
    row_span, col_span = s_r * (sm.rows - 1), s_c * (sm.columns - 1)
    r_lo, r_hi = sm.base[chosen, a_r] + min(0, row_span), sm.base[chosen, a_r] + max(0, row_span)
    c_lo, c_hi = sm.base[chosen, a_c] + min(0, col_span), sm.base[chosen, a_c] + max(0, col_span)
    rows_in, cols_in = np.arange(lo[a_r], hi[a_r] + 1), np.arange(lo[a_c], hi[a_c] + 1)
    for n in np.flatnonzero((r_lo > lo[a_r]) | (r_hi < hi[a_r]) | (c_lo > lo[a_c]) | (c_hi < hi[a_c])):
        stack[n, 1:-1, 1:-1] &= ((rows_in >= r_lo[n]) & (rows_in <= r_hi[n]))[:, None]
        stack[n, 1:-1, 1:-1] &= ((cols_in >= c_lo[n]) & (cols_in <= c_hi[n]))[None, :]

    slice_of, starts, vertices = _trace_iso_lines(stack)
    if not slice_of.size:
        return []
    # vertex -> sorted DICOM slice s; box (u, v) -> row r = s_r (lo_r - 1 + u - b_r), column c likewise
    s = chosen[np.repeat(slice_of, np.diff(starts))]
    r = s_r * (lo[a_r] - 1 + vertices[:, 0] - sm.base[s, a_r])
    c = s_c * (lo[a_c] - 1 + vertices[:, 1] - sm.base[s, a_c])
    points = sm.position_mm[s] + c[:, None] * sm.col_mm[s] + r[:, None] * sm.row_mm[s]
    values = list(map(repr, (np.round(points, CONTOUR_DECIMALS) + 0.0).ravel().tolist()))  # + 0.0: no -0.0
    items = []
    for n, slice_n in enumerate(chosen[slice_of].tolist()):
        a, b = starts[n], starts[n + 1]
        content = (
            geometry.image_references[slice_n]
            + _CLOSED_PLANAR
            + _element(0x30060046, _even(str(b - a)))
            + _element(0x30060050, _even("\\".join(values[3 * a : 3 * b])))
        )
        items.append((slice_n, _sequence_item(content)))
    return items


#: in this process, masks are read in slabs of whole slices of at most this many bytes: glibc
#: serves buffers of this size again from its heap, while each whole 512 x 512 x 150 uint8 mask
#: (39 MB) came as fresh zeroed pages: 15-18 ms against 45-55 ms per mask (19 MB slabs: 53 ms).
#: A slab re-reads the compressed file up to its start, so pool workers, which keep freed
#: memory instead (:func:`_keep_freed_memory`), read whole masks: 9 ms.
SLAB_BYTES = 12 * 2**20
#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> None:
    """Pool worker initializer: large buffers come from the heap and stay there when freed.

    Every mask allocates and frees buffers of the same size (SimpleITK's image, numpy's
    temporaries); with glibc's defaults each is a fresh ``mmap`` whose pages are faulted in and
    zeroed again. Only in the pool's own worker processes, never in the caller's; without glibc
    this does nothing.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 2**30)
        libc.mallopt(_M_TRIM_THRESHOLD, 2**30)
    except (OSError, AttributeError):
        pass


def _mask_slabs(path: str, slice_axis: int, slab_bytes: int | None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(array view (z, y, x), CT image index of its first voxel)`` of consecutive slabs along ``slice_axis``.

    ``slab_bytes=None`` reads the whole mask at once.
    """
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    size = list(reader.GetSize())
    step = size[slice_axis]
    if slab_bytes is not None:
        probe = sitk.Image([1, 1, 1], reader.GetPixelID(), reader.GetNumberOfComponents())
        slice_bytes = sitk.GetArrayViewFromImage(probe).nbytes * int(np.prod(size)) // size[slice_axis]
        step = max(1, slab_bytes // slice_bytes)
    for first in range(0, size[slice_axis], step):
        start, extent = [0, 0, 0], list(size)
        start[slice_axis], extent[slice_axis] = first, min(step, size[slice_axis] - first)
        if extent != size:  # part of the image: a region read
            reader.SetExtractIndex(start)
            reader.SetExtractSize(extent)
        image = reader.Execute()
        yield sitk.GetArrayViewFromImage(image), np.asarray(start)  # a view: `image` lives until the next slab


@dataclass(frozen=True)
class _RoiTask:
    name: str
    path: str
    cost: float  #: file size, for longest-first scheduling


@dataclass(frozen=True)
class _ContourWork:
    """Read one mask file and encode its ContourSequence (a picklable pool task)."""

    geometry: _SeriesGeometry
    slab_bytes: int | None  #: see :data:`SLAB_BYTES`

    def __call__(self, task: _RoiTask) -> tuple[int, bytes]:
        """``(number of contours, encoded ContourSequence value)``, contours ordered by sorted slice."""
        items: list[tuple[int, bytes]] = []
        for volume, start in _mask_slabs(task.path, self.geometry.slice_map.slice_axis, self.slab_bytes):
            items += _slab_contours(volume, start, self.geometry)
        items.sort(key=lambda item: item[0])  # stable: a slice's contours keep their order
        return len(items), b"".join(item for _, item in items)


def _trace_all(tasks: list[_RoiTask], geometry: _SeriesGeometry, workers: int) -> list[tuple[int, bytes]]:
    """Every task's ``(number of contours, ContourSequence value)``, in task order.

    In this process with one worker or few masks (a spawned worker takes longer to start than
    :data:`MIN_MASKS_PER_WORKER` masks take), else in the project's pool, largest file first;
    a mask that fails there fails the export (no retry: reading a file again gives the same).
    """
    pool_workers = min(workers, len(tasks) // MIN_MASKS_PER_WORKER)
    if pool_workers <= 1:
        work, traced = _ContourWork(geometry, SLAB_BYTES), []
        for task in tasks:
            try:
                traced.append(work(task))
            except Exception as exc:  # noqa: BLE001 - named and raised as the export's error
                raise RTStructExportError(f"contours of mask {task.name} ({task.path}) failed: {exc}") from exc
        return traced

    from rt_resources.parallel import RetryPolicy, run_pool

    outcome = run_pool(
        _ContourWork(geometry, None),
        tasks,
        workers=pool_workers,
        policy=RetryPolicy(attempts=1),
        initializer=_keep_freed_memory,
        cost=_task_cost,
        describe=_task_name,
        label="rtstruct_export",
    )
    if outcome.failures:
        failed = "; ".join(
            f"{tasks[i].name} ({tasks[i].path}): {f['error']}" for i, f in sorted(outcome.failures.items())
        )
        raise RTStructExportError(f"contours of {len(outcome.failures)} mask(s) failed: {failed}")
    return [outcome.results[i] for i in range(len(tasks))]


def _task_cost(task: _RoiTask) -> float:
    return task.cost


def _task_name(task: _RoiTask) -> str:
    return task.name


# --------------------------------------------------------------------------- the dataset (this process)


def _read_series(paths: list[Path]) -> list[Dataset]:
    """Headers of the CT files, sorted along the slice normal (as rt-utils sorts them)."""
    series = []
    for path in paths:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError) as exc:
            raise RTStructExportError(f"{path}: not a readable DICOM file ({exc})") from exc
        missing = [k for k in _IMAGE_KEYWORDS if k not in ds]
        if missing:
            raise RTStructExportError(
                f"{path}: not an image of the CT series (no {', '.join(missing)}); pass only the CT slices"
            )
        series.append(ds)
    _check_series(series)

    def position(ds: Dataset) -> float:
        iop = _floats(ds, "ImageOrientationPatient")
        return float(np.dot(np.cross(iop[:3], iop[3:]), _floats(ds, "ImagePositionPatient")))

    return sorted(series, key=position)


def _check_series(series: Seq[Dataset]) -> None:
    if len({str(ds.SOPInstanceUID) for ds in series}) != len(series):
        raise RTStructExportError("the CT files contain duplicate SOP Instance UIDs")
    for key in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(key, "")) for ds in series}
        if len(values) != 1 or "" in values:
            raise RTStructExportError(f"the CT files do not share one {key}: {sorted(values)}")


def _dataset(**elements) -> Dataset:
    """A sequence item with these elements (keyword: value, or tag: raw element).

    It is marked as already in the file's encoding (Implicit VR Little Endian, the default
    character set of items), so pydicom writes its raw elements as they are instead of parsing
    them first; that check only corrects ambiguous VRs (US or SS, OB or OW), which no element
    written here has.
    """
    ds = Dataset()
    for key, value in elements.items():
        if isinstance(value, RawDataElement):
            ds[value.tag] = value
        else:
            setattr(ds, key, value)
    ds.set_original_encoding(True, True, default_encoding)
    return ds


def _raw_sequence(tag: BaseTag, value: bytes) -> RawDataElement:
    """A sequence element whose value (its items) is already encoded."""
    return RawDataElement(tag, "SQ", len(value), value, 0, True, True)


def _structure_set(series: Seq[Dataset], series_description: str) -> FileDataset:
    """The RTSTRUCT without ROIs: SOP common, patient, study, series, equipment, structure set."""
    first = series[0]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ImplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset("", Dataset(), file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S.%f")
    ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for keyword in _COPIED_KEYWORDS:
        if keyword in first:
            ds[keyword] = first[keyword]
        elif keyword in _TYPE2_KEYWORDS:
            setattr(ds, keyword, "")
    ds.Modality = "RTSTRUCT"
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MODEL_NAME
    ds.StudyInstanceUID = first.StudyInstanceUID
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 1
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.SeriesDescription = series_description
    ds.StructureSetLabel = series_description[:16]  # SH
    ds.StructureSetDate, ds.StructureSetTime = date, time
    images = _raw_sequence(_CONTOUR_IMAGE_SEQUENCE, b"".join(_image_item(image) for image in series))
    referenced_series = _dataset(SeriesInstanceUID=first.SeriesInstanceUID, ContourImageSequence=images)
    study = _dataset(
        ReferencedSOPClassUID=STUDY_COMPONENT_SOP_CLASS,
        ReferencedSOPInstanceUID=first.StudyInstanceUID,
        RTReferencedSeriesSequence=Sequence([referenced_series]),
    )
    ds.ReferencedFrameOfReferenceSequence = Sequence(
        [_dataset(FrameOfReferenceUID=first.FrameOfReferenceUID, RTReferencedStudySequence=Sequence([study]))]
    )
    ds.StructureSetROISequence = Sequence()
    ds.ROIContourSequence = Sequence()
    ds.RTROIObservationsSequence = Sequence()
    ds.ApprovalStatus = "UNAPPROVED"
    return ds


def _add_roi(ds: FileDataset, name: str, contour_sequence: bytes) -> None:
    """Append ROI ``name`` (number = ROIs so far + 1) with its encoded ContourSequence value."""
    number = len(ds.StructureSetROISequence) + 1
    for_uid = ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID
    ds.StructureSetROISequence.append(
        _dataset(
            ROINumber=number, ReferencedFrameOfReferenceUID=for_uid, ROIName=name, ROIGenerationAlgorithm="AUTOMATIC"
        )
    )
    ds.ROIContourSequence.append(
        _dataset(
            ROIDisplayColor=list(DISPLAY_COLOURS[(number - 1) % len(DISPLAY_COLOURS)]),
            ContourSequence=_raw_sequence(_CONTOUR_SEQUENCE, contour_sequence),
            ReferencedROINumber=number,
        )
    )
    ds.RTROIObservationsSequence.append(
        _dataset(ObservationNumber=number, ReferencedROINumber=number, RTROIInterpretedType="ORGAN", ROIInterpreter="")
    )


def export_rtstruct(
    masks: dict[str, Path],
    ct_dicom_paths: list[Path],
    ct_image_path: Path,
    out_path: Path,
    series_description: str = "Auto-segmentation",
    *,
    workers: int = 1,
) -> Path:
    """Write the binary ``masks`` (ROI name -> NIfTI on the grid of ``ct_image_path``) as an RTSTRUCT at ``out_path``.

    The structure set references the CT series of ``ct_dicom_paths`` (frame of reference,
    study, series and every slice). Non-zero voxels are inside; masks without any are
    skipped, the others are numbered 1, 2, ... in the order of ``masks``. Contours are the
    voxel-exact outlines described in the module docstring. ``workers``: processes that read
    and trace the masks; 1 (or fewer than ``2 * MIN_MASKS_PER_WORKER`` masks) runs in this
    process; more use the project's pool of spawned workers, as the radiomics and DVH stages do
    (a script calling this must then guard its entry point with ``if __name__ == "__main__"``,
    as any spawning pool needs; Dagster's step processes and ``rtpipeline`` do). The RTSTRUCT
    is the same for any ``workers``. Raises :class:`RTStructExportError` when a CT file is not
    an image of one series, a mask is not on the CT image's grid, the CT image is not on the
    DICOM series' grid, or a mask cannot be read or traced. Returns ``out_path``.
    """
    paths = [Path(p) for p in ct_dicom_paths]
    if not paths:
        raise RTStructExportError("no CT files given")
    out_path = Path(out_path)
    ct_folders = {p.resolve().parent for p in paths}
    if out_path.resolve().parent in ct_folders:
        raise RTStructExportError(f"{out_path}: refusing to write into the CT series' folder")

    ct_grid = _read_grid(Path(ct_image_path))
    for path in masks.values():
        _check_same_grid(_read_grid(Path(path)), ct_grid, Path(path))
    series = _read_series(paths)
    geometry = _SeriesGeometry.of(series, _slice_map(series, ct_grid))

    tasks = [_RoiTask(name, str(path), float(os.path.getsize(path))) for name, path in masks.items()]
    traced = _trace_all(tasks, geometry, workers)

    ds = _structure_set(series, series_description)
    for task, (n_contours, contour_sequence) in zip(tasks, traced, strict=True):
        if n_contours:
            _add_roi(ds, task.name, contour_sequence)
    # like the items (see _dataset): the writer keeps the raw sequences raw
    ds.set_original_encoding(True, True, convert_encodings(ds.SpecificCharacterSet))
    with atomic_path(out_path) as tmp_out:
        pydicom.dcmwrite(tmp_out, ds, enforce_file_format=True)
    return out_path
