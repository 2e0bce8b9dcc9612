"""Read an RTDOSE into a SimpleITK image in Gy, with DoseGridScaling applied exactly once.

The pixel data are read with pydicom (``pixel_array``, raw stored integers) and multiplied
by DoseGridScaling here, and only here; SimpleITK's own RTDOSE reading is not used because
whether it applies the scaling depends on its version (a double-scaling bug class in the
system this replaces). Geometry (DICOM PS3.3 C.8.8.3): ImagePositionPatient is the first
frame's origin; GridFrameOffsetVector gives each frame's offset along the normal of
ImageOrientationPatient, relative to that origin (or absolute, when its first value equals
the origin's coordinate along the normal).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom

#: frame offsets may deviate this much (mm) from an even grid
FRAME_TOLERANCE_MM = 0.01


class DoseError(ValueError):
    """An RTDOSE that cannot be used as a dose in Gy, with the file and the reason."""


@dataclass
class DoseGrid:
    """A dose distribution in Gy and where it came from."""

    image: object  #: SimpleITK.Image, float64, Gy
    sop_instance_uid: str
    summation_type: str
    dose_type: str
    for_uid: str
    ref_plan_uids: list[str]
    ref_beam_numbers: list[int]
    path: Path

    @property
    def max_gy(self) -> float:
        import SimpleITK as sitk

        return float(sitk.GetArrayViewFromImage(self.image).max())


def read_rtdose(path: Path) -> DoseGrid:
    """The RTDOSE at ``path`` as a :class:`DoseGrid` in Gy; refuses RELATIVE doses."""
    import SimpleITK as sitk

    path = Path(path)
    ds = pydicom.dcmread(path)
    units = str(ds.get("DoseUnits", "")).upper()
    if units != "GY":
        raise DoseError(
            f"{path}: DoseUnits is {units or 'missing'!r}, not GY; a relative dose cannot be reported in Gy"
        )
    scaling = ds.get("DoseGridScaling")
    if scaling is None:
        raise DoseError(f"{path}: DoseGridScaling (3004,000E) is missing")
    stored = ds.pixel_array
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if stored.ndim == 2:
        stored = stored[np.newaxis]
    if stored.shape[0] != frames:
        raise DoseError(f"{path}: {stored.shape[0]} frames of pixel data, NumberOfFrames says {frames}")
    dose = stored.astype(np.float64) * float(scaling)

    iop = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    row, col = iop[:3], iop[3:]
    normal = np.cross(row, col)
    origin = np.asarray([float(v) for v in ds.ImagePositionPatient])
    spacing_row, spacing_col = (float(v) for v in ds.PixelSpacing)
    offsets = np.asarray([float(v) for v in ds.get("GridFrameOffsetVector") or [0.0]])
    if len(offsets) != frames:
        raise DoseError(f"{path}: GridFrameOffsetVector has {len(offsets)} values for {frames} frames")
    if frames > 1 and offsets[0] != 0 and abs(offsets[0] - origin @ normal) < FRAME_TOLERANCE_MM:
        offsets = offsets - offsets[0]  # absolute offsets (PS3.3 C.8.8.3.2 type b)
    order = np.argsort(offsets, kind="stable")
    offsets, dose = offsets[order], dose[order]
    step = 1.0
    if frames > 1:
        gaps = np.diff(offsets)
        step = float(np.median(gaps))
        if step <= 0 or np.max(np.abs(gaps - step)) > FRAME_TOLERANCE_MM:
            spacings = [float(g) for g in sorted(set(np.round(gaps, 3)))]
            raise DoseError(f"{path}: uneven dose frame spacing {spacings} mm")
    first = origin + offsets[0] * normal

    image = sitk.GetImageFromArray(dose)
    image.SetOrigin(tuple(first))
    image.SetSpacing((spacing_col, spacing_row, step))
    image.SetDirection(tuple(np.column_stack([row, col, normal]).ravel()))

    beams = []
    plan_uids = []
    for plan in ds.get("ReferencedRTPlanSequence", []) or []:
        plan_uids.append(str(plan.ReferencedSOPInstanceUID))
        for group in plan.get("ReferencedFractionGroupSequence", []) or []:
            beams += [int(b.ReferencedBeamNumber) for b in group.get("ReferencedBeamSequence", []) or []]
    return DoseGrid(
        image=image,
        sop_instance_uid=str(ds.SOPInstanceUID),
        summation_type=str(ds.get("DoseSummationType", "")).upper(),
        dose_type=str(ds.get("DoseType", "")),
        for_uid=str(ds.get("FrameOfReferenceUID", "")),
        ref_plan_uids=plan_uids,
        ref_beam_numbers=beams,
        path=path,
    )
