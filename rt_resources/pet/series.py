"""A PET series as one volume of rescaled values (stored * RescaleSlope + RescaleIntercept), with
its headers in slice order, ready for the SUV scale of :mod:`rt_resources.pet.suv`.

Geometry is checked exactly as for a CT (:func:`rt_resources.imaging.ct_series.validate_ct_series`:
one orientation, one matrix and pixel spacing, no tilt, no duplicate or missing slices), with
"PET series" in the message. Only classic single-frame PET Image Storage is read (Enhanced PET is
refused at ingest). PET writes a RescaleSlope per slice (each slice uses the full int16 range), so
the rescale is applied slice by slice; the values are then in the series' Units (BQML, CNTS, GML)
and become SUV only through the scale factors, which are per slice too. The volume's geometry
(origin, spacing, direction) is the validated one, in DICOM patient coordinates (LPS, mm).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom

from rt_resources.dicom.sop_classes import PET_IMAGE
from rt_resources.imaging.ct_series import CTGeometry, CTSeriesError, validate_ct_series
from rt_resources.imaging.planes import rescaled_plane


class PETSeriesError(ValueError):
    """A PET series that cannot be read or trusted, with what is wrong and where."""


@dataclass(frozen=True)
class PetVolume:
    """A PET series read: values in its Units, headers in the same (slice) order."""

    values: np.ndarray  #: (z, y, x) float64, stored * RescaleSlope + RescaleIntercept per slice
    headers: list[pydicom.Dataset]  #: one per slice, in slice order (pixel data dropped)
    paths: list[Path]  #: the slice files, in slice order
    geometry: CTGeometry

    def image(self, values: np.ndarray | None = None) -> Any:
        """``values`` (default: the rescaled values) as a float32 SimpleITK image on this grid."""
        import SimpleITK as sitk

        image = sitk.GetImageFromArray(np.asarray(self.values if values is None else values, dtype=np.float32))
        image.SetSpacing(self.geometry.spacing_mm)
        image.SetOrigin(self.geometry.origin_mm)
        image.SetDirection(self.geometry.direction)
        return image


def read_pet_series(paths: list[Path]) -> PetVolume:
    """Read a PET series (its files in any order). Raises :class:`PETSeriesError` naming the file
    for a series that is not single-frame PET Image Storage, has inconsistent geometry, or cannot
    be decoded."""
    if not paths:
        raise PETSeriesError("PET series has no files")
    try:
        geometry = validate_ct_series([Path(p) for p in paths])
    except CTSeriesError as exc:
        raise PETSeriesError(f"PET series: {exc}") from exc
    columns, rows, _ = geometry.size
    planes, headers = [], []
    for path in geometry.paths:
        ds = pydicom.dcmread(path)
        sop_class = str(ds.get("SOPClassUID", ""))
        if sop_class != PET_IMAGE or int(ds.get("NumberOfFrames", 1) or 1) > 1:
            raise PETSeriesError(
                f"{path}: SOP Class {sop_class or 'missing'} (Modality {ds.get('Modality', 'missing')}) is not "
                "single-frame PET Image Storage; export classic PET images"
            )
        planes.append(rescaled_plane(ds, path, rows, columns, PETSeriesError, "PET"))
        del ds.PixelData
        headers.append(ds)
    return PetVolume(np.stack(planes), headers, list(geometry.paths), geometry)
