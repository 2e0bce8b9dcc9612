"""Spatial Registration Storage (REG): the rigid CT <-> MR registration of a course.

The REG belongs to the CT's study and frame of reference (its top-level
FrameOfReferenceUID is the CT's, the "registered" frame). Its RegistrationSequence has
two items, each with a ReferencedImageSequence listing that frame's images and one
MatrixRegistrationSequence > MatrixSequence item (FrameOfReferenceTransformationMatrixType
RIGID, 16 values, row-major):

1. the CT frame of reference with the identity matrix;
2. the MR frame of reference with ``M = inv(mr_from_ct)``, which maps MR patient
   coordinates into the REG's (CT) frame, as DICOM PS3.3 C.20.2.1 defines it: the matrix
   of an item transforms points from that item's frame of reference to the frame of
   reference of the Spatial Registration instance.

Matrix values are written with up to 16 characters (about 13 significant digits), so the
matrix read back reproduces the ground truth to far below 1e-6.
The Common Instance Reference module lists the CT instances (ReferencedSeriesSequence) and
the MR instances of the MR study (StudiesContainingOtherReferencedInstancesSequence).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, MRImageStorage, SpatialRegistrationStorage

from .common import CourseContext, base_dataset, item, save, seq
from .ct import CtSeries
from .mr import MrSeries, mr_from_ct_matrix
from .options import SynthFile


def ds16(value: float) -> str:
    """A DS string of at most 16 characters with as many significant digits as fit."""
    value = float(value)
    if value == 0.0:
        return "0"
    for digits in range(15, 0, -1):
        text = f"{value:.{digits}g}"
        if len(text) <= 16:
            return text
    raise ValueError(f"cannot format {value} as DS")  # pragma: no cover - 1 digit always fits


def _matrix_values(matrix: np.ndarray) -> list[str]:
    return [ds16(v) for v in np.asarray(matrix, dtype=float).reshape(16)]


def _registration_item(
    for_uid: str, sop_class_uid: str, image_uids: list[str], matrix: np.ndarray, code: tuple[str, str]
) -> Dataset:
    matrix_item = item(
        FrameOfReferenceTransformationMatrixType="RIGID",
        FrameOfReferenceTransformationMatrix=_matrix_values(matrix),
    )
    registration_type = item(CodeValue=code[0], CodingSchemeDesignator="DCM", CodeMeaning=code[1])
    return item(
        ReferencedImageSequence=seq(
            *(item(ReferencedSOPClassUID=sop_class_uid, ReferencedSOPInstanceUID=uid) for uid in image_uids)
        ),
        FrameOfReferenceUID=for_uid,
        MatrixRegistrationSequence=seq(
            item(RegistrationTypeCodeSequence=seq(registration_type), MatrixSequence=seq(matrix_item))
        ),
    )


def _referenced_series(series_uid: str, sop_class_uid: str, image_uids: list[str]) -> Dataset:
    return item(
        SeriesInstanceUID=series_uid,
        ReferencedInstanceSequence=seq(
            *(item(ReferencedSOPClassUID=sop_class_uid, ReferencedSOPInstanceUID=uid) for uid in image_uids)
        ),
    )


def write_reg(ctx: CourseContext, ct: CtSeries, mr: MrSeries, path: Path) -> SynthFile:
    """Write the rigid CT <-> MR Spatial Registration object of this course to ``path``."""
    sop_uid = ctx.role("reg/instance")
    ds = base_dataset(
        ctx,
        sop_class_uid=SpatialRegistrationStorage,
        sop_instance_uid=sop_uid,
        modality="REG",
        series_uid=ctx.role("reg/series"),
        series_number=20,
        series_description="REG MR to CT rigid",
    )
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.ContentDate = ctx.date
    ds.ContentTime = ctx.time
    ds.ContentLabel = "REG_MR_CT"
    ds.ContentDescription = "Rigid registration of the MR to the planning CT"
    ds.ContentCreatorName = "Synthetic^Planner"
    ct_from_mr = np.linalg.inv(mr_from_ct_matrix())
    ds.RegistrationSequence = seq(
        _registration_item(
            ctx.frame_of_reference_uid,
            CTImageStorage,
            ct.slice_uids,
            np.eye(4),
            ("125021", "Frame of Reference Identity"),
        ),
        _registration_item(
            mr.frame_of_reference_uid,
            MRImageStorage,
            mr.slice_uids,
            ct_from_mr,
            ("125024", "Image Content-based Alignment"),
        ),
    )
    ds.ReferencedSeriesSequence = seq(_referenced_series(ct.series_uid, CTImageStorage, ct.slice_uids))
    ds.StudiesContainingOtherReferencedInstancesSequence = seq(
        item(
            StudyInstanceUID=mr.study_uid,
            ReferencedSeriesSequence=seq(_referenced_series(mr.series_uid, MRImageStorage, mr.slice_uids)),
        )
    )
    return save(ds, path)
