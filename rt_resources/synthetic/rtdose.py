"""RT Dose: the analytic dose sampled on a coarse grid, stored as scaled uint32.

Grid: in-plane spacing 2x the CT pixel spacing (for CT pixels under 1.25 mm the smallest
whole multiple of at least ``MIN_DOSE_PIXEL_MM`` = 2.5 mm instead, e.g. 3 x 0.977 = 2.93 mm at
clinical size, the dose resolution a planning system exports), covering BODY plus a 10 mm
margin, shifted by half a CT pixel; frames spaced by the CT slice spacing, lying half-way
between CT slices.  GridFrameOffsetVector is relative (first value 0) and counts mm
along the image-plane normal (row cosine x column cosine), so frame ``k`` lies at
``ImagePositionPatient + offset[k] * normal``.  Dose (Gy) = stored * DoseGridScaling.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from pydicom.tag import Tag
from pydicom.uid import RTDoseStorage, RTPlanStorage

from .common import CourseContext, base_dataset, ds_list, ds_str, item, save, seq
from .geometry import Grid, centred_grid
from .options import SynthFile

MARGIN_MM = 10.0
#: smallest in-plane dose pixel (mm); only CT pixels under 1.25 mm (2 x 1.25) are affected
MIN_DOSE_PIXEL_MM = 2.5
MAX_STORED = 2**24  # DoseGridScaling is chosen so the maximum stored value is about this


def dose_grid(ctx: CourseContext) -> Grid:
    """The RTDOSE grid of this course (same orientation as the CT)."""
    opts = ctx.options
    body = ctx.phantom.body
    step = max(2, math.ceil(MIN_DOSE_PIXEL_MM / opts.pixel_mm)) * opts.pixel_mm
    cols = math.ceil(2 * (body.semi_axes[0] + MARGIN_MM) / step) + 1
    rows = math.ceil(2 * (body.semi_axes[1] + MARGIN_MM) / step) + 1
    frames = opts.slices - 1
    half = opts.pixel_mm / 2.0
    cx, cy, cz = ctx.phantom.centre
    return centred_grid(
        (cx + half, cy + half, cz),
        (frames, rows, cols),
        (step, step, opts.slice_mm),
        opts.patient_position,
    )


def dose_scaling(max_dose_gy: float) -> tuple[str, float]:
    """DoseGridScaling as its DS text and the exact float it denotes (max stored ~ 2**24)."""
    text = f"{max(max_dose_gy, 1e-6) / MAX_STORED:.8e}"
    return text, float(text)


def quantise(dose_gy: np.ndarray, scaling: float) -> np.ndarray:
    """Stored uint32 values for ``dose_gy`` at ``scaling`` Gy per unit."""
    return np.round(dose_gy / scaling).astype("<u4")


def split_beams(stored: np.ndarray, n_beams: int) -> list[np.ndarray]:
    """Split stored plan values into ``n_beams`` equal integer parts that sum exactly to them."""
    base = stored // n_beams
    remainder = stored - base * n_beams
    return [(base + (remainder > b)).astype("<u4") for b in range(n_beams)]


def write_rtdose(
    ctx: CourseContext,
    *,
    role: str,
    grid: Grid,
    stored: np.ndarray,
    scaling_text: str,
    plan_uid: str,
    beam_number: int | None,
    series_number: int,
    path: Path,
) -> SynthFile:
    """Write one RTDOSE of ``stored`` (frames, rows, cols) uint32 values.

    ``beam_number`` None gives DoseSummationType PLAN; otherwise BEAM, with the beam
    referenced through ReferencedRTPlanSequence -> ReferencedFractionGroupSequence ->
    ReferencedBeamSequence.
    """
    uid = ctx.role(f"rtdose/{role}")
    ds = base_dataset(
        ctx,
        sop_class_uid=RTDoseStorage,
        sop_instance_uid=uid,
        modality="RTDOSE",
        series_uid=ctx.role(f"rtdose/{role}/series"),
        series_number=series_number,
        series_description=f"Dose {role}",
    )
    ds.ContentDate = ctx.date
    ds.ContentTime = ctx.time
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = ds_list(grid.origin)
    ds.ImageOrientationPatient = ds_list(grid.orientation)
    ds.PixelSpacing = ds_list([grid.spacing[1], grid.spacing[0]])
    ds.SliceThickness = ds_str(grid.spacing[2])
    frames, rows, cols = grid.shape
    ds.NumberOfFrames = frames
    ds.FrameIncrementPointer = Tag("GridFrameOffsetVector")
    ds.GridFrameOffsetVector = ds_list(k * grid.spacing[2] for k in range(frames))
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 32
    ds.BitsStored = 32
    ds.HighBit = 31
    ds.PixelRepresentation = 0
    ds.DoseUnits = "GY"
    ds.DoseType = "PHYSICAL"
    ds.DoseSummationType = "PLAN" if beam_number is None else "BEAM"
    ds.DoseGridScaling = scaling_text
    ds.TissueHeterogeneityCorrection = "IMAGE"
    plan_ref = item(ReferencedSOPClassUID=RTPlanStorage, ReferencedSOPInstanceUID=plan_uid)
    if beam_number is not None:
        plan_ref.ReferencedFractionGroupSequence = seq(
            item(
                ReferencedFractionGroupNumber=1,
                ReferencedBeamSequence=seq(item(ReferencedBeamNumber=beam_number)),
            )
        )
    ds.ReferencedRTPlanSequence = seq(plan_ref)
    assert stored.shape == grid.shape and stored.dtype == np.dtype("<u4")
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"
    return save(ds, path)
