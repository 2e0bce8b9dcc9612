"""An MR series as one float32 volume, and course masks mapped onto it through a rigid REG.

Geometry is checked exactly as for a CT (:func:`rt_resources.imaging.ct_series.validate_ct_series`:
one orientation, one matrix and pixel spacing, no tilt/shear, no duplicate or missing
slices; the least-squares uniform slice grid is used), so an MR is refused for the same
reasons, with the file named and "MR series" in the message. Only classic single-frame
MR Image Storage is read (Enhanced MR is refused). Pixels are read with pydicom and
RescaleSlope/RescaleIntercept are applied per slice when present (MR Image Storage does not
define them, but some vendors write them, sometimes differing between slices); the
volume's geometry (origin, spacing, direction: row cosine, column cosine, normal) is the
validated one, in DICOM patient coordinates (LPS, mm) of the MR's frame of reference.

Masks live on the CT grid (CT frame of reference). :func:`masks_on_mr` resamples them onto
the MR grid given the 4x4 matrix ``ct_to_mr`` that maps CT patient points to MR patient
points (``transform_between(reg, ct_for, mr_for)``); SimpleITK's resampler needs the
opposite map (MR output point -> CT input point), which is ``inv(ct_to_mr)``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom

from rt_resources.dicom.sop_classes import ENHANCED_MR_IMAGE, MR_IMAGE
from rt_resources.imaging.ct_series import CTGeometry, CTSeriesError, validate_ct_series
from rt_resources.imaging.planes import rescaled_plane
from rt_resources.imaging.registration import sitk_transform


class MRSeriesError(ValueError):
    """An MR series that cannot be read or trusted, with what is wrong and where."""


def validate_mr_series(paths: list[Path]) -> CTGeometry:
    """Check the geometry of an MR series from its headers (the CT checks, MR in the message)."""
    if not paths:
        raise MRSeriesError("MR series has no files")
    try:
        return validate_ct_series([Path(p) for p in paths])
    except CTSeriesError as exc:
        raise MRSeriesError(f"MR series: {exc}") from exc


def read_mr_volume(paths: list[Path]):
    """Read an MR series as a float32 ``SimpleITK.Image`` (rescale applied when present).

    Raises :class:`MRSeriesError` (a ``ValueError``) naming the file for a series that is not
    single-frame MR Image Storage, has inconsistent geometry, or cannot be decoded.
    """
    import SimpleITK as sitk

    geometry = validate_mr_series(paths)
    columns, rows, _ = geometry.size
    planes = []
    for path in geometry.paths:
        ds = pydicom.dcmread(path)
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class == ENHANCED_MR_IMAGE or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise MRSeriesError(f"{path}: multi-frame (Enhanced) MR is not supported; export classic MR images")
        if sop_class != MR_IMAGE:
            raise MRSeriesError(
                f"{path}: SOP Class {sop_class or 'missing'} (Modality {ds.get('Modality', 'missing')}) "
                "is not MR Image Storage"
            )
        planes.append(rescaled_plane(ds, path, rows, columns, MRSeriesError, "MR"))
    image = sitk.GetImageFromArray(np.stack(planes).astype(np.float32))
    image.SetSpacing(geometry.spacing_mm)
    image.SetOrigin(geometry.origin_mm)
    image.SetDirection(geometry.direction)
    return image


def masks_on_mr(mask, mr, ct_to_mr: np.ndarray):
    """Resample a mask (or label map, values 0..255) on the CT grid onto the grid of ``mr``.

    ``ct_to_mr`` is the 4x4 matrix mapping CT patient points to MR patient points. Nearest
    neighbour, 0 outside the CT grid; returns a UInt8 ``SimpleITK.Image`` with the geometry of ``mr``.
    """
    import SimpleITK as sitk

    m = np.asarray(ct_to_mr, dtype=float)
    if m.shape != (4, 4):
        raise ValueError(f"ct_to_mr must be a 4x4 matrix, got shape {m.shape}")
    if mask.GetDimension() != 3 or mr.GetDimension() != 3:
        raise ValueError(f"mask and MR must be 3D images (got {mask.GetDimension()}D and {mr.GetDimension()}D)")
    values = sitk.GetArrayViewFromImage(mask)
    if values.size and (values.min() < 0 or values.max() > 255 or np.any(np.mod(values, 1) != 0)):
        raise ValueError("mask values must be integers in 0..255 (a binary mask or a label map)")
    mask_u8 = sitk.Cast(mask, sitk.sitkUInt8)
    # Resample's transform maps output (MR) points to input (CT) points: the inverse of ct_to_mr
    transform = sitk_transform(np.linalg.inv(m))
    return sitk.Resample(mask_u8, mr, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
