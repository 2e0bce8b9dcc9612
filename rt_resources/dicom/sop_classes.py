"""SOP classes the pipeline understands, and how each file is classified into a :class:`Kind`.

Classification is by SOP Class UID (DICOM PS3.4 Annex B; the UIDs are pydicom's own constants),
with Modality only named in the reason for an unknown class, so a mislabelled Modality never
reroutes an object.
"""

from __future__ import annotations

from enum import StrEnum

from pydicom import uid


class Kind(StrEnum):
    """What a source file is to the pipeline (a closed set). A ``StrEnum``: the manifest and the
    index store the plain string ("CT", "RTPLAN", ...) and a kind compares equal to it."""

    CT = "CT"
    MR = "MR"
    PT = "PT"
    RTSTRUCT = "RTSTRUCT"
    RTPLAN = "RTPLAN"
    RTDOSE = "RTDOSE"
    REG = "REG"


CT_IMAGE = uid.CTImageStorage
ENHANCED_CT_IMAGE = uid.EnhancedCTImageStorage
MR_IMAGE = uid.MRImageStorage
ENHANCED_MR_IMAGE = uid.EnhancedMRImageStorage
PET_IMAGE = uid.PositronEmissionTomographyImageStorage
ENHANCED_PET_IMAGE = uid.EnhancedPETImageStorage
RT_IMAGE = uid.RTImageStorage
RT_DOSE = uid.RTDoseStorage
RT_STRUCTURE_SET = uid.RTStructureSetStorage
RT_BEAMS_RECORD = uid.RTBeamsTreatmentRecordStorage
RT_PLAN = uid.RTPlanStorage
RT_ION_PLAN = uid.RTIonPlanStorage
SPATIAL_REGISTRATION = uid.SpatialRegistrationStorage
DEFORMABLE_REGISTRATION = uid.DeformableSpatialRegistrationStorage
MEDIA_STORAGE_DIRECTORY = uid.MediaStorageDirectoryStorage  # DICOMDIR

#: the kind of each SOP class the pipeline reads
KIND_BY_SOP_CLASS: dict[str, Kind] = {
    CT_IMAGE: Kind.CT,
    MR_IMAGE: Kind.MR,
    PET_IMAGE: Kind.PT,
    RT_STRUCTURE_SET: Kind.RTSTRUCT,
    RT_PLAN: Kind.RTPLAN,
    RT_ION_PLAN: Kind.RTPLAN,
    RT_DOSE: Kind.RTDOSE,
    SPATIAL_REGISTRATION: Kind.REG,
    DEFORMABLE_REGISTRATION: Kind.REG,
}

#: classes we recognise but do not use yet, with the reason a person reads
UNSUPPORTED_SOP_CLASSES: dict[str, str] = {
    ENHANCED_CT_IMAGE: "Enhanced CT (multi-frame) is not supported yet; export classic CT images",
    ENHANCED_MR_IMAGE: "Enhanced MR (multi-frame) is not supported yet",
    ENHANCED_PET_IMAGE: "Enhanced PET (multi-frame) is not supported yet; export classic PET images",
    RT_IMAGE: "RT Image (portal/DRR) is not used by this pipeline",
    RT_BEAMS_RECORD: "RT Beams Treatment Record is not used by this pipeline",
}

#: kinds whose files carry Pixel Data that must be complete
PIXEL_KINDS = frozenset({Kind.CT, Kind.MR, Kind.PT, Kind.RTDOSE})
#: image series (one volume from many files)
IMAGE_KINDS = frozenset({Kind.CT, Kind.MR, Kind.PT})


def classify(sop_class_uid: str, modality: str) -> tuple[Kind | None, str | None]:
    """Return ``(kind, reason)``: the pipeline kind, or ``None`` and why the file is not used."""
    kind = KIND_BY_SOP_CLASS.get(sop_class_uid)
    if kind is not None:
        return kind, None
    if sop_class_uid in UNSUPPORTED_SOP_CLASSES:
        return None, UNSUPPORTED_SOP_CLASSES[sop_class_uid]
    if not sop_class_uid:
        return None, f"no SOPClassUID (Modality {modality or 'missing'}): not a composite DICOM object"
    return None, f"SOP Class {sop_class_uid} (Modality {modality or 'missing'}) is not used by this pipeline"
