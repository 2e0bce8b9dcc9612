"""RT Structure Set: polygons of the phantom's analytic shapes on every CT slice.

As in real exports there is no top-level FrameOfReferenceUID: the frame of reference,
study and CT series are referenced through ReferencedFrameOfReferenceSequence ->
RTReferencedStudySequence -> RTReferencedSeriesSequence -> ContourImageSequence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from pydicom.uid import CTImageStorage, RTStructureSetStorage

from .common import CourseContext, base_dataset, ds_str, item, save, seq, set_raw_ds
from .ct import CtSeries
from .options import SynthFile
from .phantom import Ellipsoid

DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"
CONTOUR_POINTS = 64
ROI_COLOURS = {
    "BODY": [0, 255, 0],
    "PTV": [255, 0, 0],
    "PTV_boost": [255, 0, 255],
    "Lung_L": [0, 128, 255],
    "Lung_R": [0, 255, 255],
    "Heart": [255, 128, 0],
    "Spine": [255, 255, 128],
    "SpinalCord": [255, 255, 0],
}
ROI_TYPES = {"BODY": "EXTERNAL", "PTV": "PTV", "PTV_boost": "PTV"}  # others: ORGAN


class ContourShape(Protocol):
    """Anything with a planar cross-section polygon per slice (e.g. ``Ellipsoid``)."""

    def polygon(self, z: float, n_points: int = CONTOUR_POINTS) -> np.ndarray | None: ...


@dataclass(frozen=True)
class StructureSet:
    """The written RTSTRUCT and its ROI numbers."""

    sop_instance_uid: str
    roi_numbers: dict[str, int]
    file: SynthFile


def _contour_images(ct: CtSeries, indices: list[int]) -> list:
    return [
        item(
            ReferencedSOPClassUID=CTImageStorage,
            ReferencedSOPInstanceUID=ct.slice_uids[i],
        )
        for i in indices
    ]


def write_rtstruct(
    ctx: CourseContext,
    ct: CtSeries,
    rois: Mapping[str, Ellipsoid | ContourShape],
    path: Path,
    *,
    n_points: int = CONTOUR_POINTS,
    omit_empty_contour_sequence: bool = False,
) -> StructureSet:
    """Write an RTSTRUCT with one CLOSED_PLANAR contour per CT slice crossing each ROI.

    ContourData are patient coordinates (mm, rounded to 0.001), z exactly equal to the
    slice's ImagePositionPatient z; each contour references its CT slice.  ``n_points``
    is passed to ``shape.polygon(z, n_points)``.  With ``omit_empty_contour_sequence``
    an ROI without any contour gets no ContourSequence (Type 3) instead of an empty one.
    """
    uid = ctx.role("rtstruct")
    ds = base_dataset(
        ctx,
        sop_class_uid=RTStructureSetStorage,
        sop_instance_uid=uid,
        modality="RTSTRUCT",
        series_uid=ctx.role("rtstruct/series"),
        series_number=2,
        series_description="manual",
    )
    ds.StructureSetLabel = "manual"
    ds.StructureSetName = "manual contours"
    ds.StructureSetDate = ctx.date
    ds.StructureSetTime = ctx.time

    series_item = item(
        SeriesInstanceUID=ct.series_uid,
        ContourImageSequence=seq(*_contour_images(ct, list(range(len(ct.slice_uids))))),
    )
    study_item = item(
        ReferencedSOPClassUID=DETACHED_STUDY_MANAGEMENT,
        ReferencedSOPInstanceUID=ctx.study_uid,
        RTReferencedSeriesSequence=seq(series_item),
    )
    ds.ReferencedFrameOfReferenceSequence = seq(
        item(
            FrameOfReferenceUID=ctx.frame_of_reference_uid,
            RTReferencedStudySequence=seq(study_item),
        )
    )

    roi_items, contour_items, observation_items = [], [], []
    numbers: dict[str, int] = {}
    for number, (name, shape) in enumerate(rois.items(), start=1):
        numbers[name] = number
        roi_items.append(
            item(
                ROINumber=number,
                ReferencedFrameOfReferenceUID=ctx.frame_of_reference_uid,
                ROIName=name,
                ROIGenerationAlgorithm="MANUAL",
            )
        )
        contours = []
        for k, z in enumerate(ct.slice_z):
            polygon = shape.polygon(z, n_points)
            if polygon is None:
                continue
            z_text = ds_str(z)
            data: list[str] = []
            for px, py, _ in polygon:
                data += [ds_str(round(px, 3)), ds_str(round(py, 3)), z_text]
            contour = item(
                ContourImageSequence=seq(*_contour_images(ct, [k])),
                ContourGeometricType="CLOSED_PLANAR",
                NumberOfContourPoints=len(polygon),
                ContourNumber=len(contours) + 1,
            )
            set_raw_ds(contour, "ContourData", data)
            contours.append(contour)
        contour_item = item(
            ROIDisplayColor=ROI_COLOURS.get(name, [128, 128, 128]),
            ContourSequence=seq(*contours),
            ReferencedROINumber=number,
        )
        if omit_empty_contour_sequence and not contours:
            del contour_item.ContourSequence
        contour_items.append(contour_item)
        observation_items.append(
            item(
                ObservationNumber=number,
                ReferencedROINumber=number,
                ROIObservationLabel=name,
                RTROIInterpretedType=ROI_TYPES.get(name, "ORGAN"),
                ROIInterpreter="",
            )
        )
    ds.StructureSetROISequence = seq(*roi_items)
    ds.ROIContourSequence = seq(*contour_items)
    ds.RTROIObservationsSequence = seq(*observation_items)
    ds.ApprovalStatus = "UNAPPROVED"
    return StructureSet(sop_instance_uid=uid, roi_numbers=numbers, file=save(ds, path))
