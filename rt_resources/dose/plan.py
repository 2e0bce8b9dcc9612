"""What an RTPLAN prescribes (DICOM PS3.3 C.8.8.10 and C.8.8.13)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pydicom


@dataclass
class PlanInfo:
    sop_instance_uid: str
    for_uid: str
    prescription_gy: float | None  #: None when the plan states no prescription
    prescription_source: str  #: which tags the prescription came from
    fractions: int | None  #: NumberOfFractionsPlanned of the first fraction group
    fraction_groups: int = 1  #: how many fraction groups the plan has (phases beyond the first are not separated)
    beam_numbers: list[int] = field(default_factory=list)


def read_plan(path: Path) -> PlanInfo:
    """Prescription of the plan at ``path``.

    The prescription is the largest TargetPrescriptionDose of the DoseReferenceSequence items
    of type TARGET; without one, the fraction group's dose per fraction (the sum of its
    beams' BeamDose) times NumberOfFractionsPlanned.
    """
    ds = pydicom.dcmread(path)
    targets = [
        float(ref.TargetPrescriptionDose)
        for ref in ds.get("DoseReferenceSequence", []) or []
        if str(ref.get("DoseReferenceType", "")).upper() == "TARGET" and ref.get("TargetPrescriptionDose") is not None
    ]
    groups = ds.get("FractionGroupSequence", []) or []
    fractions = (
        int(groups[0].NumberOfFractionsPlanned) if groups and groups[0].get("NumberOfFractionsPlanned") else None
    )
    beams = [int(b.ReferencedBeamNumber) for g in groups for b in g.get("ReferencedBeamSequence", []) or []]
    if targets:
        rx, source = max(targets), "DoseReferenceSequence TargetPrescriptionDose (largest TARGET)"
    else:
        per_fraction = sum(
            float(b.BeamDose)
            for g in groups[:1]
            for b in g.get("ReferencedBeamSequence", []) or []
            if b.get("BeamDose")
        )
        if per_fraction > 0 and fractions:
            rx, source = per_fraction * fractions, "FractionGroupSequence BeamDose sum x NumberOfFractionsPlanned"
        else:
            rx, source = None, "no prescription in the plan"
    return PlanInfo(
        sop_instance_uid=str(ds.SOPInstanceUID),
        for_uid=str(ds.get("FrameOfReferenceUID", "")),
        prescription_gy=rx,
        prescription_source=source,
        fractions=fractions,
        fraction_groups=len(groups),
        beam_numbers=beams,
    )
