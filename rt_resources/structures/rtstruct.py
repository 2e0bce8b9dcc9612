"""ROIs of an RTSTRUCT as planar contours in patient coordinates (DICOM LPS, mm)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom


@dataclass
class ROI:
    number: int
    name: str  #: exactly as in the RTSTRUCT (tables keep it; file names are sanitized)
    interpreted_type: str
    contours: list[np.ndarray] = field(default_factory=list)  #: each (N, 3) mm, CLOSED_PLANAR
    skipped: list[str] = field(default_factory=list)  #: contours not used, and why

    @property
    def empty(self) -> bool:
        return not self.contours


def read_rois(path: Path) -> list[ROI]:
    """Every ROI declared in the structure set, with its closed planar contours.

    POINT and OPEN contours are listed in ``skipped`` (they enclose no volume); an ROI
    with no contours is returned with ``empty`` true, never dropped.
    """
    ds = pydicom.dcmread(path)
    types = {
        int(o.ReferencedROINumber): str(o.get("RTROIInterpretedType", ""))
        for o in ds.get("RTROIObservationsSequence", []) or []
        if o.get("ReferencedROINumber") is not None
    }
    rois = {
        int(r.ROINumber): ROI(int(r.ROINumber), str(r.get("ROIName", "")), types.get(int(r.ROINumber), ""))
        for r in ds.get("StructureSetROISequence", []) or []
    }
    for rc in ds.get("ROIContourSequence", []) or []:
        roi = rois.get(int(rc.ReferencedROINumber))
        if roi is None:
            continue
        for c in rc.get("ContourSequence", []) or []:
            kind = str(c.get("ContourGeometricType", "CLOSED_PLANAR")).upper()
            data = c.get("ContourData")
            if not data:
                roi.skipped.append("contour without ContourData")
                continue
            points = np.asarray([float(v) for v in data]).reshape(-1, 3)
            if kind != "CLOSED_PLANAR" or len(points) < 3:
                roi.skipped.append(f"{kind} contour with {len(points)} points encloses no area")
                continue
            roi.contours.append(points)
    return sorted(rois.values(), key=lambda r: r.number)
