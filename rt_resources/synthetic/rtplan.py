"""RT Plan: a 4-field static photon plan on the PTV (primary) or boost sphere."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import RTPlanStorage, RTStructureSetStorage

from .common import CourseContext, base_dataset, ds_list, ds_str, item, save, seq
from .options import SynthFile

GANTRY_ANGLES = (0.0, 90.0, 180.0, 270.0)
MACHINE = "SYNTH_LINAC"
MU_PER_GY_PER_BEAM = 100.0


@dataclass(frozen=True)
class PlanSpec:
    """What distinguishes the primary and boost plans."""

    role: str  # "primary" or "boost": file name part and UID role
    label: str  # RTPlanLabel
    prescription_gy: float  # TargetPrescriptionDose, Gy (whole course)
    fractions: int
    target_roi: str  # ROI name of the target sphere
    series_number: int


@dataclass(frozen=True)
class Plan:
    """The written RTPLAN."""

    spec: PlanSpec
    sop_instance_uid: str
    beam_numbers: list[int]
    file: SynthFile


def write_rtplan(
    ctx: CourseContext,
    spec: PlanSpec,
    struct_uid: str,
    target_roi_number: int,
    isocentre_mm: tuple[float, float, float],
    path: Path,
) -> Plan:
    """Write an RTPLAN referencing the RTSTRUCT ``struct_uid``.

    Doses are in Gy: TargetPrescriptionDose is the whole-course prescription; BeamDose
    in the fraction group is the dose per fraction contributed by each beam (equal
    weights). IsocenterPosition is in patient coordinates (mm).
    """
    uid = ctx.role(f"rtplan/{spec.role}")
    ds = base_dataset(
        ctx,
        sop_class_uid=RTPlanStorage,
        sop_instance_uid=uid,
        modality="RTPLAN",
        series_uid=ctx.role(f"rtplan/{spec.role}/series"),
        series_number=spec.series_number,
        series_description=f"Plan {spec.label}",
    )
    ds.FrameOfReferenceUID = ctx.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.RTPlanLabel = spec.label
    ds.RTPlanName = f"{spec.label} {spec.prescription_gy:g}Gy/{spec.fractions}fx"
    ds.RTPlanDate = ctx.date
    ds.RTPlanTime = ctx.time
    ds.RTPlanGeometry = "PATIENT"
    ds.ApprovalStatus = "APPROVED"
    ds.ReferencedStructureSetSequence = seq(
        item(
            ReferencedSOPClassUID=RTStructureSetStorage,
            ReferencedSOPInstanceUID=struct_uid,
        )
    )
    ds.DoseReferenceSequence = seq(
        item(
            DoseReferenceNumber=1,
            DoseReferenceUID=ctx.role(f"rtplan/{spec.role}/doseref"),
            DoseReferenceStructureType="VOLUME",
            ReferencedROINumber=target_roi_number,
            DoseReferenceDescription=spec.target_roi,
            DoseReferenceType="TARGET",
            TargetPrescriptionDose=ds_str(spec.prescription_gy),
        )
    )

    n_beams = len(GANTRY_ANGLES)
    beam_numbers = list(range(1, n_beams + 1))
    dose_per_fx_per_beam = spec.prescription_gy / spec.fractions / n_beams
    meterset = dose_per_fx_per_beam * MU_PER_GY_PER_BEAM
    ds.FractionGroupSequence = seq(
        item(
            FractionGroupNumber=1,
            NumberOfFractionsPlanned=spec.fractions,
            NumberOfBeams=n_beams,
            NumberOfBrachyApplicationSetups=0,
            ReferencedBeamSequence=seq(
                *[
                    item(
                        ReferencedBeamNumber=b,
                        BeamDose=ds_str(dose_per_fx_per_beam),
                        BeamMeterset=ds_str(meterset),
                        BeamDoseSpecificationPoint=ds_list(isocentre_mm),
                    )
                    for b in beam_numbers
                ]
            ),
        )
    )

    iso = ds_list(isocentre_mm)
    beams = []
    for b, angle in zip(beam_numbers, GANTRY_ANGLES, strict=False):
        cp0 = item(
            ControlPointIndex=0,
            NominalBeamEnergy="6",
            GantryAngle=ds_str(angle),
            GantryRotationDirection="NONE",
            BeamLimitingDeviceAngle="0",
            BeamLimitingDeviceRotationDirection="NONE",
            PatientSupportAngle="0",
            PatientSupportRotationDirection="NONE",
            TableTopEccentricAngle="0",
            TableTopEccentricRotationDirection="NONE",
            IsocenterPosition=iso,
            SourceToSurfaceDistance="900",
            CumulativeMetersetWeight="0",
            BeamLimitingDevicePositionSequence=seq(
                item(RTBeamLimitingDeviceType="ASYMX", LeafJawPositions=["-40", "40"]),
                item(RTBeamLimitingDeviceType="ASYMY", LeafJawPositions=["-40", "40"]),
            ),
        )
        cp1 = item(ControlPointIndex=1, CumulativeMetersetWeight="1")
        beams.append(
            item(
                BeamNumber=b,
                BeamName=f"G{int(angle):03d}",
                BeamDescription=f"Static field gantry {int(angle)}",
                BeamType="STATIC",
                RadiationType="PHOTON",
                TreatmentMachineName=MACHINE,
                PrimaryDosimeterUnit="MU",
                SourceAxisDistance="1000",
                BeamLimitingDeviceSequence=seq(
                    item(RTBeamLimitingDeviceType="ASYMX", NumberOfLeafJawPairs=1),
                    item(RTBeamLimitingDeviceType="ASYMY", NumberOfLeafJawPairs=1),
                ),
                TreatmentDeliveryType="TREATMENT",
                NumberOfWedges=0,
                NumberOfCompensators=0,
                NumberOfBoli=0,
                NumberOfBlocks=0,
                FinalCumulativeMetersetWeight="1",
                NumberOfControlPoints=2,
                ControlPointSequence=seq(cp0, cp1),
                ReferencedPatientSetupNumber=1,
            )
        )
    ds.BeamSequence = seq(*beams)
    ds.PatientSetupSequence = seq(
        item(
            PatientPosition=ctx.options.patient_position,
            PatientSetupNumber=1,
            SetupTechnique="ISOCENTRIC",
        )
    )
    return Plan(spec=spec, sop_instance_uid=uid, beam_numbers=beam_numbers, file=save(ds, path))
