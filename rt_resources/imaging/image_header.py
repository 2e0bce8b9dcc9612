"""Header-only reads of image files (NIfTI masks, dose and CT volumes): geometry without voxels."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def read_image_header(path: Path):
    """A SimpleITK ``ImageFileReader`` of ``path`` with the header read and no voxels loaded."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    reader.ReadImageInformation()
    return reader


def image_geometry(image) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(origin, spacing, direction 3x3, size)`` of a SimpleITK image or image reader."""
    return (
        np.asarray(image.GetOrigin(), float),
        np.asarray(image.GetSpacing(), float),
        np.asarray(image.GetDirection(), float).reshape(3, 3),
        np.asarray(image.GetSize(), float),
    )
