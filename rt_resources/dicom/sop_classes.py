"""SOP Class UIDs the pipeline understands, and how each file is classified.

Classification is by SOP Class UID (DICOM PS3.4 Annex B), with Modality only as a
fallback for unknown classes, so a mislabelled Modality never reroutes an object.
"""

from __future__ import annotations

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
PET_IMAGE = "1.2.840.10008.5.1.4.1.1.128"
RT_IMAGE = "1.2.840.10008.5.1.4.1.1.481.1"
RT_DOSE = "1.2.840.10008.5.1.4.1.1.481.2"
RT_STRUCTURE_SET = "1.2.840.10008.5.1.4.1.1.481.3"
RT_BEAMS_RECORD = "1.2.840.10008.5.1.4.1.1.481.4"
RT_PLAN = "1.2.840.10008.5.1.4.1.1.481.5"
RT_ION_PLAN = "1.2.840.10008.5.1.4.1.1.481.8"
SPATIAL_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.1"
DEFORMABLE_REGISTRATION = "1.2.840.10008.5.1.4.1.1.66.3"
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # DICOMDIR
DETACHED_STUDY_MANAGEMENT = "1.2.840.10008.3.1.2.3.1"

#: kind used by the pipeline for each supported SOP class
KIND_BY_SOP_CLASS: dict[str, str] = {
    CT_IMAGE: "CT",
    MR_IMAGE: "MR",
    PET_IMAGE: "PT",
    RT_STRUCTURE_SET: "RTSTRUCT",
    RT_PLAN: "RTPLAN",
    RT_ION_PLAN: "RTPLAN",
    RT_DOSE: "RTDOSE",
    SPATIAL_REGISTRATION: "REG",
    DEFORMABLE_REGISTRATION: "REG",
}

#: classes we recognise but do not use yet, with the reason a person reads
UNSUPPORTED_SOP_CLASSES: dict[str, str] = {
    ENHANCED_CT_IMAGE: "Enhanced CT (multi-frame) is not supported yet; export classic CT images",
    ENHANCED_MR_IMAGE: "Enhanced MR (multi-frame) is not supported yet",
    RT_IMAGE: "RT Image (portal/DRR) is not used by this pipeline",
    RT_BEAMS_RECORD: "RT Beams Treatment Record is not used by this pipeline",
}

#: kinds whose files carry Pixel Data that must be complete
PIXEL_KINDS = frozenset({"CT", "MR", "PT", "RTDOSE"})


def classify(sop_class_uid: str, modality: str) -> tuple[str | None, str | None]:
    """Return ``(kind, reason)``: the pipeline kind, or ``None`` and why the file is not used."""
    kind = KIND_BY_SOP_CLASS.get(sop_class_uid)
    if kind is not None:
        return kind, None
    if sop_class_uid in UNSUPPORTED_SOP_CLASSES:
        return None, UNSUPPORTED_SOP_CLASSES[sop_class_uid]
    if not sop_class_uid:
        return None, f"no SOPClassUID (Modality {modality or 'missing'}): not a composite DICOM object"
    return None, f"SOP Class {sop_class_uid} (Modality {modality or 'missing'}) is not used by this pipeline"
