"""Auto-segmentation masks (NIfTI on the CT grid) exported as a DICOM RTSTRUCT with rt-utils.

rt-utils (``RTStructBuilder``) loads the CT series, sorts it and builds the structure set:
study/patient attributes, the ReferencedFrameOfReferenceSequence -> RTReferencedStudySequence
-> RTReferencedSeriesSequence -> ContourImageSequence pointing at the CT, and per ROI the
StructureSetROI, RTROIObservation and ROIContour items (``RTStruct.add_roi``).

Two things are not left to rt-utils:

* **Mask layout.** rt-utils wants ``[rows, columns, slices]`` with slices in the order of its
  own sorted series (ascending ImagePositionPatient . (row cosine x column cosine)); a
  SimpleITK array is ``(z, y, x)`` in whatever order the NIfTI's axes run. The mapping is
  derived from geometry, not assumed: each DICOM slice's ImagePositionPatient is mapped to
  a CT-volume index (its slice), and the pixel steps along a row and down a column
  (ImageOrientationPatient x PixelSpacing) to signed unit steps of the volume's index axes.
  Any patient position, and any axis order/flip of the NIfTI, is handled by the same code.
* **Contour geometry.** rt-utils 1.2.7 traces the centres of the boundary pixels
  (``cv2.findContours``), so a voxel on the boundary lies *on* its contour and the
  "centre inside the polygon" rule (our rasterizer, and most planning systems) drops or keeps
  it by rounding: a 2880-voxel block came back as 2480 voxels (Dice 0.93). It also scales the
  column step by the row spacing (PixelSpacing is row spacing, column spacing; rt-utils issue
  #92), which distorts non-square pixels. So each ROI's ContourSequence is replaced by the
  0.5 iso-line of the mask (marching squares on the slice): every vertex lies midway between
  an inside and an outside pixel centre, no centre lies on a contour, and rasterizing the
  RTSTRUCT back onto the CT gives the mask voxel for voxel. Holes are separate contours
  (even-odd rule), as rt-utils writes them. Each contour lies in its slice's own plane
  (that slice's ImagePositionPatient), and references that slice.

The CT files are only read: rt-utils is given a temporary folder of links (or copies) to
them, outside the CT folder. The RTSTRUCT is written atomically.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

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
    """CT volume index (i, j, k) of pixel (row r, column c) of sorted slice s: ``base[s] + c*col_step + r*row_step``."""

    base: np.ndarray  #: (slices, 3) int
    col_step: np.ndarray  #: (3,) int, index step of one column (along the row cosine)
    row_step: np.ndarray  #: (3,) int, index step of one row (along the column cosine)
    rows: int
    columns: int

    def gather(self, volume_zyx: np.ndarray) -> np.ndarray:
        """``volume_zyx`` (SimpleITK array order) as rt-utils' ``[rows, columns, slices]`` array."""
        r, c = np.mgrid[0 : self.rows, 0 : self.columns]
        offsets = c[..., None] * self.col_step + r[..., None] * self.row_step  # (rows, columns, 3)
        out = np.empty((self.rows, self.columns, len(self.base)), dtype=volume_zyx.dtype)
        for s, b in enumerate(self.base):
            i, j, k = np.moveaxis(offsets + b, -1, 0)
            out[:, :, s] = volume_zyx[k, j, i]
        return out


def _unit_step(v: np.ndarray, what: str) -> np.ndarray:
    step = np.rint(v)
    if np.abs(step).sum() != 1 or np.max(np.abs(v - step)) > AXIS_TOLERANCE:
        raise RTStructExportError(
            f"one DICOM {what} step is {np.round(v, 4).tolist()} voxels of the CT image, not a step along one of "
            "its axes: the CT image is not on the DICOM series' grid (resampled or reoriented?)"
        )
    return step.astype(np.int64)


def _slice_map(series: Seq[Dataset], ct: _Grid) -> _SliceMap:
    """Map rt-utils' sorted slices and their pixels onto the CT volume's indices, from geometry alone."""
    first = series[0]
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
    row_spacing, col_spacing = (float(v) for v in first.PixelSpacing)
    rows, columns = int(first.Rows), int(first.Columns)
    # PixelSpacing is (spacing between rows, spacing between columns): moving one column
    # goes along the row cosine by the column spacing, one row along the column cosine by the row spacing
    col_step = _unit_step(ct.to_index(iop[:3] * col_spacing)[0], "column")
    row_step = _unit_step(ct.to_index(iop[3:] * row_spacing)[0], "row")
    if np.any((col_step != 0) & (row_step != 0)):
        raise RTStructExportError("the DICOM row and column steps map to the same CT image axis")
    slice_axis = int(np.flatnonzero((col_step == 0) & (row_step == 0))[0])
    inplane = [a for a in range(3) if a != slice_axis]

    base = []
    for ds in series:
        if np.max(np.abs(np.asarray([float(v) for v in ds.ImageOrientationPatient]) - iop)) > AXIS_TOLERANCE:
            raise RTStructExportError(f"slice {ds.SOPInstanceUID}: ImageOrientationPatient differs from the series'")
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
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
    base = np.asarray(base)
    if len(np.unique(base[:, slice_axis])) != len(base):
        raise RTStructExportError("two DICOM slices map to the same CT image slice")
    size = np.asarray(ct.size)
    last_col, last_row = (columns - 1) * col_step, (rows - 1) * row_step
    for corner in (0, last_col, last_row, last_col + last_row):
        idx = base + corner
        if np.any(idx < 0) or np.any(idx >= size):
            raise RTStructExportError(f"the DICOM slices reach outside the CT image (size {ct.size})")
    return _SliceMap(base=base, col_step=col_step, row_step=row_step, rows=rows, columns=columns)


def _slice_contours(mask_2d: np.ndarray) -> list[np.ndarray]:
    """Closed 0.5 iso-lines of a binary ``(rows, columns)`` slice, as ``(N, 2)`` (row, column) pixel coordinates.

    Vertices lie at midpoints between an inside and an outside pixel centre; collinear
    vertices are dropped and the closing vertex is not repeated.
    """
    from skimage.measure import approximate_polygon, find_contours

    padded = np.pad(mask_2d.astype(np.float64), 1)  # closes contours at the image edge
    out = []
    for contour in find_contours(padded, 0.5):
        contour = approximate_polygon(contour, tolerance=1e-6) - 1.0  # only collinear points (0 is a no-op)
        if len(contour) > 1 and np.array_equal(contour[0], contour[-1]):
            contour = contour[:-1]
        if len(contour) >= 3:
            out.append(contour)
    return out


def _contour_sequence(mask_rcs: np.ndarray, series: Seq[Dataset]) -> Sequence:
    """ContourSequence of a ``[rows, columns, slices]`` mask: each contour in its slice's plane, referencing it."""
    sequence = Sequence()
    for s, ds in enumerate(series):
        if not mask_rcs[:, :, s].any():
            continue
        iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
        row_spacing, col_spacing = (float(v) for v in ds.PixelSpacing)
        ipp = np.asarray([float(v) for v in ds.ImagePositionPatient])
        for rc in _slice_contours(mask_rcs[:, :, s]):
            points = ipp + np.outer(rc[:, 1] * col_spacing, iop[:3]) + np.outer(rc[:, 0] * row_spacing, iop[3:])
            image = Dataset()
            image.ReferencedSOPClassUID = ds.SOPClassUID
            image.ReferencedSOPInstanceUID = ds.SOPInstanceUID
            contour = Dataset()
            contour.ContourImageSequence = Sequence([image])
            contour.ContourGeometricType = "CLOSED_PLANAR"
            contour.NumberOfContourPoints = len(points)
            contour.ContourData = [round(float(v), 4) for v in points.ravel()]  # DS: at most 16 characters
            sequence.append(contour)
    return sequence


def _new_rtstruct(folder: Path):
    """``RTStructBuilder.create_new`` under pydicom 3.

    Compatibility: rt-utils 1.2.7 sets ``FileDataset.is_little_endian``/``is_implicit_VR``,
    deprecated in pydicom 3 (removed in 4). The values agree with the Transfer Syntax it puts
    in the file meta (Implicit VR Little Endian), from which pydicom 3 encodes the file, so
    these two warnings are silenced here; the file is written with ``enforce_file_format``.
    """
    from rt_utils import RTStructBuilder

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*(is_little_endian|is_implicit_VR).*", category=DeprecationWarning)
        return RTStructBuilder.create_new(str(folder))


def _link_series(paths: list[Path], folder: Path) -> None:
    for n, path in enumerate(paths):
        target = folder / f"{n:05d}.dcm"
        try:
            os.symlink(Path(path).resolve(), target)
        except OSError:  # no symlinks (some filesystems / Windows): copy
            shutil.copyfile(path, target)


def _check_series(series: Seq[Dataset], paths: list[Path]) -> None:
    if len(series) != len(paths):
        raise RTStructExportError(
            f"rt-utils loaded {len(series)} images of the {len(paths)} CT files (files without pixel data are dropped)"
        )
    if len({str(ds.SOPInstanceUID) for ds in series}) != len(series):
        raise RTStructExportError("the CT files contain duplicate SOP Instance UIDs")
    for key in ("SeriesInstanceUID", "StudyInstanceUID", "FrameOfReferenceUID"):
        values = {str(ds.get(key, "")) for ds in series}
        if len(values) != 1 or "" in values:
            # rt-utils would invent a FrameOfReferenceUID when it is missing: refuse instead
            raise RTStructExportError(f"the CT files do not share one {key}: {sorted(values)}")


def export_rtstruct(
    masks: dict[str, Path],
    ct_dicom_paths: list[Path],
    ct_image_path: Path,
    out_path: Path,
    series_description: str = "Auto-segmentation",
) -> Path:
    """Write the binary ``masks`` (ROI name -> NIfTI on the grid of ``ct_image_path``) as an RTSTRUCT at ``out_path``.

    The structure set references the CT series of ``ct_dicom_paths`` (frame of reference,
    study, series and every slice). Non-zero voxels are inside; masks without any are
    skipped. Contours are the voxel-exact outlines described in the module docstring.
    Raises :class:`RTStructExportError` when a mask is not on the CT image's grid or the
    CT image is not on the DICOM series' grid. Returns ``out_path``.
    """
    import SimpleITK as sitk

    paths = [Path(p) for p in ct_dicom_paths]
    if not paths:
        raise RTStructExportError("no CT files given")
    out_path = Path(out_path)
    ct_folders = {p.resolve().parent for p in paths}
    if out_path.resolve().parent in ct_folders:
        raise RTStructExportError(f"{out_path}: refusing to write into the CT series' folder")

    ct_grid = _read_grid(Path(ct_image_path))
    grids = {name: _read_grid(Path(path)) for name, path in masks.items()}
    for name, grid in grids.items():
        _check_same_grid(grid, ct_grid, Path(masks[name]))

    with tempfile.TemporaryDirectory(prefix="rtstruct-ct-") as tmp:
        _link_series(paths, Path(tmp))
        rtstruct = _new_rtstruct(Path(tmp))
    series = rtstruct.series_data
    _check_series(series, paths)
    slice_map = _slice_map(series, ct_grid)

    rtstruct.set_series_description(series_description)
    rtstruct.ds.StructureSetLabel = series_description[:16]  # SH
    if "InstitutionName" in series[0]:
        rtstruct.ds.InstitutionName = series[0].InstitutionName
    else:
        del rtstruct.ds.InstitutionName  # rt-utils writes its own lab's name

    for name, path in masks.items():
        mask = slice_map.gather(sitk.GetArrayFromImage(sitk.ReadImage(str(path))) != 0)
        if not mask.any():
            continue
        rtstruct.add_roi(mask, name=name, roi_generation_algorithm=0)  # 0: AUTOMATIC
        rtstruct.ds.ROIContourSequence[-1].ContourSequence = _contour_sequence(mask, series)

    with atomic_path(out_path) as tmp_out:
        pydicom.dcmwrite(tmp_out, rtstruct.ds, enforce_file_format=True)
    return out_path
