"""MR Image Storage series: a T1-weighted-looking image of the phantom in its own frame of reference.

The MR is acquired in a frame of reference of its own (new FrameOfReferenceUID, new study,
same patient). Its patient coordinates differ from the CT's by a known rigid transform::

    p_mr = R @ p_ct + t        R = rotation by MR_ROTATION_DEG about +z, t = MR_TRANSLATION_MM

with ``R = [[cos a, -sin a, 0], [sin a, cos a, 0], [0, 0, 1]]`` (a right-handed rotation in
LPS: +x towards +y). ``mr_from_ct_matrix()`` is this map as a 4x4 homogeneous matrix; the
phantom therefore sits at ``R @ c + t`` in MR coordinates, and the image value of an MR
voxel at ``p_mr`` is the tissue of the phantom at ``p_ct = R.T @ (p_mr - t)``.

Grid: axis-aligned in MR coordinates (the IOP of the patient position), centred on the
phantom, pixel spacing 1.5x the CT's, slice spacing 1.2x the CT's, with a field of view that
covers BODY plus a 10 mm margin (fewer rows and columns than the CT, rows != columns), so a
reader that does not resample on the real geometry is caught. Intensities (uint16, no
rescale) follow tissue classes: fat (outer shell of BODY) bright, soft tissue medium, cord
brighter than muscle, heart darker, bone dark-ish, lung dark, air ~0; plus deterministic
integer noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.uid import MRImageStorage

from .common import CourseContext, base_dataset, ds_str, save, set_image_plane
from .geometry import Grid, centred_grid
from .options import SynthFile
from .phantom import Ellipsoid, Phantom

MR_ROTATION_DEG = 4.0  # rotation of the MR frame about +z relative to the CT frame
MR_TRANSLATION_MM = (12.0, -8.0, 15.0)  # t in p_mr = R @ p_ct + t
MR_PIXEL_FACTOR = 1.5  # MR pixel spacing / CT pixel spacing
MR_SLICE_FACTOR = 1.2  # MR slice spacing / CT slice spacing
MR_MARGIN_MM = 10.0

# T1-weighted-looking intensities (stored values, arbitrary units)
MR_AIR = 0.0
MR_FAT = 900.0
MR_SOFT_TISSUE = 450.0
MR_LUNG = 40.0
MR_HEART = 300.0
MR_BONE = 200.0
MR_CORD = 650.0
MR_NOISE = 10  # uniform integer noise in [-MR_NOISE, MR_NOISE] inside BODY, [0, MR_NOISE] in air
FAT_SHELL = 0.9  # BODY semi-axes scaled by this bound the soft tissue; the shell outside is fat


@dataclass(frozen=True)
class MrSeries:
    """What the registration (and tests) need to reference the MR."""

    series_uid: str
    study_uid: str
    frame_of_reference_uid: str
    slice_uids: list[str]  # SOP Instance UIDs in slice order (InstanceNumber 1..n)
    files: list[SynthFile]
    grid: Grid


def mr_from_ct_matrix() -> np.ndarray:
    """4x4 homogeneous matrix mapping CT patient coordinates to MR patient coordinates."""
    a = math.radians(MR_ROTATION_DEG)
    m = np.eye(4)
    m[:3, :3] = [[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]]
    m[:3, 3] = MR_TRANSLATION_MM
    return m


def t1_intensity(phantom: Phantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Noise-free T1-like intensity at CT patient points (mm) of ``phantom``."""
    x, y, z = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    body = phantom.body
    inner = Ellipsoid(body.centre, tuple(FAT_SHELL * s for s in body.semi_axes))  # type: ignore[arg-type]
    out = np.full(x.shape, MR_AIR)
    out[body.contains(x, y, z)] = MR_FAT
    out[inner.contains(x, y, z)] = MR_SOFT_TISSUE
    out[phantom.lung_l.contains(x, y, z)] = MR_LUNG
    out[phantom.lung_r.contains(x, y, z)] = MR_LUNG
    out[phantom.heart.contains(x, y, z)] = MR_HEART
    out[phantom.spine.contains(x, y, z)] = MR_BONE
    out[phantom.cord.contains(x, y, z)] = MR_CORD
    return out


def mr_grid(ctx: CourseContext) -> Grid:
    """MR grid in MR patient coordinates: centred on the phantom, covering BODY + margin."""
    opts = ctx.options
    m = mr_from_ct_matrix()
    a = math.radians(MR_ROTATION_DEG)
    ax, ay, _ = ctx.phantom.body.semi_axes
    # half-extents of the rotated BODY ellipse along MR x and y
    ex = math.hypot(ax * math.cos(a), ay * math.sin(a))
    ey = math.hypot(ax * math.sin(a), ay * math.cos(a))
    step = MR_PIXEL_FACTOR * opts.pixel_mm
    cols = math.ceil(2 * (ex + MR_MARGIN_MM) / step) + 1
    rows = math.ceil(2 * (ey + MR_MARGIN_MM) / step) + 1
    slice_step = MR_SLICE_FACTOR * opts.slice_mm
    slices = max(4, math.ceil((opts.slices - 1) * opts.slice_mm / slice_step) + 1)
    centre = m[:3, :3] @ np.asarray(ctx.phantom.centre) + m[:3, 3]
    return centred_grid(
        (float(centre[0]), float(centre[1]), float(centre[2])),
        (slices, rows, cols),
        (step, step, slice_step),
        opts.patient_position,
    )


def write_mr(ctx: CourseContext, folder: Path) -> MrSeries:
    """Write the MR series into ``folder`` as MR_0001.dcm ... (uint16, no rescale)."""
    grid = mr_grid(ctx)
    opts = ctx.options
    series_uid = ctx.role("mr/series")
    study_uid = ctx.role("mr/study")
    for_uid = ctx.role("mr/frame_of_reference")
    ct_from_mr = np.linalg.inv(mr_from_ct_matrix())
    rng = ctx.rng("mr/noise")
    uids: list[str] = []
    files: list[SynthFile] = []
    for k in range(grid.shape[0]):
        x, y, z = grid.slice_points(k)
        # CT coordinates of every MR voxel centre: p_ct = R.T @ (p_mr - t)
        xc, yc, zc = (
            ct_from_mr[i, 0] * x + ct_from_mr[i, 1] * y + ct_from_mr[i, 2] * z + ct_from_mr[i, 3] for i in range(3)
        )
        values = t1_intensity(ctx.phantom, xc, yc, zc)
        inside = ctx.phantom.body.contains(xc, yc, zc)
        noise = np.where(
            inside,
            rng.integers(-MR_NOISE, MR_NOISE + 1, size=values.shape),
            rng.integers(0, MR_NOISE + 1, size=values.shape),
        )
        stored = np.clip(np.round(values + noise), 0, 65535).astype("<u2")
        uid = ctx.role(f"mr/slice/{k + 1}")
        ds = base_dataset(
            ctx,
            sop_class_uid=MRImageStorage,
            sop_instance_uid=uid,
            modality="MR",
            series_uid=series_uid,
            series_number=1,
            series_description="MR T1 synthetic",
            instance_number=k + 1,
        )
        # a diagnostic MR: its own study, same patient
        ds.StudyInstanceUID = study_uid
        ds.StudyDescription = f"Synthetic MR for RT course {ctx.course_number}"
        ds.StudyID = f"MR{ctx.course_number}"
        ds.AccessionNumber = f"SYN{ctx.index:03d}-{ctx.course_number}MR"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ContentDate = ctx.date
        ds.ContentTime = ctx.time
        ds.AcquisitionNumber = 1
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "500"
        ds.EchoTime = "15"
        ds.EchoTrainLength = "1"
        ds.EchoNumbers = "1"
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = "1.5"
        ds.AngioFlag = "N"
        set_image_plane(ds, grid, k, for_uid, opts.patient_position, grid.spacing[2], stored)
        ds.SpacingBetweenSlices = ds_str(grid.spacing[2])
        ds.WindowCenter = "450"
        ds.WindowWidth = "1000"
        files.append(save(ds, folder / f"MR_{k + 1:04d}.dcm"))
        uids.append(uid)
    return MrSeries(
        series_uid=series_uid,
        study_uid=study_uid,
        frame_of_reference_uid=for_uid,
        slice_uids=uids,
        files=files,
        grid=grid,
    )
