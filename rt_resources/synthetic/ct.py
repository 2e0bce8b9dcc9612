"""CT Image Storage series: one file per slice of the analytic phantom."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import CTImageStorage

from .common import CourseContext, base_dataset, save, set_image_plane
from .geometry import Grid, centred_grid
from .options import SynthFile, SynthOptions
from .phantom import Phantom, noisy_hu

RESCALE_INTERCEPT = -1024  # stored int16 value = HU + 1024


@dataclass(frozen=True)
class CtSeries:
    """What later objects need to reference the CT."""

    series_uid: str
    slice_uids: list[str]  # SOP Instance UIDs in slice order (InstanceNumber 1..n)
    slice_z: list[float]  # patient z (mm) of each slice, same order
    files: list[SynthFile]


def ct_grid(options: SynthOptions, phantom: Phantom) -> Grid:
    """CT grid centred on the phantom; slice k is stacked along the IOP normal.

    Slice 0 (CT_0001.dcm, InstanceNumber 1) is the first slice along the normal, so a
    series reader that sorts by position gets it first (origin == its IPP).
    """
    n = options.rows
    return centred_grid(
        phantom.centre,
        (options.slices, n, n),
        (options.pixel_mm, options.pixel_mm, options.slice_mm),
        options.patient_position,
    )


def write_ct(
    ctx: CourseContext,
    folder: Path,
    *,
    hu_fn: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    description: str = "CT synthetic thorax",
) -> CtSeries:
    """Write the CT series into ``folder`` as CT_0001.dcm ... (HU + 1024 as int16).

    ``hu_fn(x, y, z)`` (patient mm -> HU), when given, replaces the noisy phantom
    (no noise added); ``description`` is the SeriesDescription.
    """
    grid = ctx.ct_grid
    opts = ctx.options
    series_uid = ctx.role("ct/series")
    rng = ctx.rng("ct/noise")
    uids: list[str] = []
    zs: list[float] = []
    files: list[SynthFile] = []
    for k in range(grid.shape[0]):
        x, y, z = grid.slice_points(k)
        hu = noisy_hu(ctx.phantom, x, y, z, rng) if hu_fn is None else hu_fn(x, y, z)
        stored = np.round(hu - RESCALE_INTERCEPT).astype("<i2")
        uid = ctx.role(f"ct/slice/{k + 1}")
        ds = base_dataset(
            ctx,
            sop_class_uid=CTImageStorage,
            sop_instance_uid=uid,
            modality="CT",
            series_uid=series_uid,
            series_number=1,
            series_description=description,
            instance_number=k + 1,
        )
        position = grid.slice_position(k)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ContentDate = ctx.date
        ds.ContentTime = ctx.time
        ds.AcquisitionNumber = 1
        ds.KVP = "120"
        set_image_plane(ds, grid, k, ctx.frame_of_reference_uid, opts.patient_position, opts.slice_mm, stored)
        ds.RescaleIntercept = str(RESCALE_INTERCEPT)
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        files.append(save(ds, folder / f"CT_{k + 1:04d}.dcm"))
        uids.append(uid)
        zs.append(float(position[2]))
    return CtSeries(series_uid=series_uid, slice_uids=uids, slice_z=zs, files=files)
