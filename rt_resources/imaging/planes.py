"""One slice of a single-frame image series as rescaled values: the pixel checks MR and PET share."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom


def rescale_of(ds: pydicom.Dataset) -> tuple[float, float]:
    """``(RescaleSlope, RescaleIntercept)`` of a slice; 1 and 0 when absent (MR Image Storage does
    not define them, though some vendors write them; PET writes a slope per slice)."""
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    return (1.0 if slope in (None, "") else float(slope)), (0.0 if intercept in (None, "") else float(intercept))


def rescaled_plane(
    ds: pydicom.Dataset, path: Path, rows: int, columns: int, error: type[ValueError], what: str
) -> np.ndarray:
    """The slice's stored values * RescaleSlope + RescaleIntercept (float64, rows x columns).

    Raises ``error`` naming the file for a colour image, pixel data that cannot be decoded, or a
    matrix other than the series' (``what``: "MR", "PET", for the message)."""
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise error(f"{path}: SamplesPerPixel {ds.SamplesPerPixel}; only grayscale {what} is supported")
    try:
        stored = ds.pixel_array
    except Exception as exc:  # missing decoder plugin, corrupt pixel data
        raise error(f"{path}: pixel data cannot be decoded ({type(exc).__name__}: {exc})") from exc
    if stored.shape != (rows, columns):
        raise error(f"{path}: pixel data has shape {stored.shape}, headers say {rows}x{columns}")
    slope, intercept = rescale_of(ds)
    return stored.astype(np.float64) * slope + intercept
