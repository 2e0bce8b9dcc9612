"""The export report (``export.json``): what a recipient, or a reviewer, needs to trust the export.

It names the profile, the edition of Table E.1-1 and the library that supplied it, the options
(none implemented, none claimed), the UID method, and every place where the export differs from
the table: attributes kept against the profile and why, free text cleared beyond it, the sequence
rules, and for each attribute the pipeline reads what the profile does to it. It names files by
their export UIDs only: no source path, source UID or identifier leaves the site through it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rt_resources.export import profile
from rt_resources.export.uids import UID_METHOD
from rt_resources.provenance import tool_versions

if TYPE_CHECKING:
    from rt_resources.export.course import ExportReport

SCHEMA = "rtpipeline.export/1"
#: Annex E options (PS3.16 CID 7050); none is implemented, so none is claimed in the files
OPTIONS_NOT_IMPLEMENTED = {
    "113101": "Clean Pixel Data (images with burned-in annotation are refused instead)",
    "113102": "Clean Recognizable Visual Features",
    "113103": "Clean Graphics (overlays and curves are removed by the table)",
    "113104": "Clean Structured Content",
    "113105": "Clean Descriptors (only the free-text fields listed in the report are cleared)",
    "113106": "Retain Longitudinal Temporal Information Full Dates",
    "113107": "Retain Longitudinal Temporal Information Modified Dates",
    "113108": "Retain Patient Characteristics",
    "113109": "Retain Device Identity",
    "113110": "Retain UIDs",
    "113111": "Retain Safe Private",
    "113112": "Retain Institution Identity",
}
#: free-text fields that may hold names: each is removed or neutral in the export
FREE_TEXT = (
    "StructureSetLabel",
    "StructureSetName",
    "StructureSetDescription",
    "ROIDescription",
    "RTPlanLabel",
    "RTPlanName",
    "RTPlanDescription",
    "SeriesDescription",
    "StudyDescription",
    "ContentDescription",
    "ROIObservationLabel",
    "BeamDescription",
    "DoseReferenceDescription",
    "PatientComments",
    "ImageComments",
)
#: what the pipeline reads (dicom/header.py, dose/, structures/rtstruct.py, imaging/): must survive
PIPELINE_ATTRIBUTES = (
    "PatientID",
    "PatientName",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "FrameOfReferenceUID",
    "InstanceNumber",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "SliceThickness",
    "GantryDetectorTilt",
    "RescaleSlope",
    "RescaleIntercept",
    "SamplesPerPixel",
    "NumberOfFrames",
    "PixelData",
    "ReferencedFrameOfReferenceSequence",
    "RTReferencedStudySequence",
    "RTReferencedSeriesSequence",
    "StructureSetROISequence",
    "ROINumber",
    "ROIName",
    "ReferencedFrameOfReferenceUID",
    "ROIContourSequence",
    "ReferencedROINumber",
    "ContourSequence",
    "ContourGeometricType",
    "ContourData",
    "RTROIObservationsSequence",
    "RTROIInterpretedType",
    "ReferencedStructureSetSequence",
    "ReferencedSOPInstanceUID",
    "DoseReferenceSequence",
    "DoseReferenceUID",
    "DoseReferenceType",
    "TargetPrescriptionDose",
    "FractionGroupSequence",
    "NumberOfFractionsPlanned",
    "ReferencedBeamSequence",
    "ReferencedBeamNumber",
    "BeamDose",
    "ReferencedDoseReferenceSequence",
    "ReferencedDoseReferenceUID",
    "DoseUnits",
    "DoseType",
    "DoseSummationType",
    "DoseGridScaling",
    "GridFrameOffsetVector",
    "ReferencedRTPlanSequence",
    "ReferencedFractionGroupSequence",
    "RegistrationSequence",
    "MatrixRegistrationSequence",
    "MatrixSequence",
    "FrameOfReferenceTransformationMatrixType",
    "FrameOfReferenceTransformationMatrix",
    "DeformableRegistrationSequence",
    "SourceFrameOfReferenceUID",
)


def report_document(report: ExportReport, objects: list[dict]) -> dict:
    """``export.json`` of a course: the profile, its options, the UID method, the rules, the files."""
    return {
        "schema": SCHEMA,
        "course_key": report.course_key,
        "profile": {
            "name": profile.PROFILE,
            "code": profile.PROFILE_CODE,
            "table": profile.TABLE,
            "table_source": "DICOM PS3.15 Table E.1-1 as shipped by the library",
            "library": {"name": profile.LIBRARY, "import": "dicomanonymizer", "version": profile.library_version()},
            "applied": "to the dataset and to every item of every sequence (the library alone: top level only)",
            "deidentification_method": profile.METHOD,
        },
        "options": {
            "implemented": [],
            "not_implemented": OPTIONS_NOT_IMPLEMENTED,
            "private_attributes": "all removed",
            "burned_in_annotation": "objects with BurnedInAnnotation YES are refused, not written",
        },
        "uid_method": {
            "method": UID_METHOD,
            "scope": "every UID the table replaces, in every object and sequence, and in the File Meta Information",
            "unchanged": "UIDs under the DICOM root 1.2.840.10008 (SOP classes, transfer syntaxes)",
        },
        **report_rules(),
        "files": {"written": report.written, "objects": objects, "refused": report.refused},
        "tables": report.tables,
        "warnings": report.warnings,
        "created_by": tool_versions(extra=(profile.LIBRARY,)),
    }


def report_rules() -> dict:
    """What the export does beyond or against the table, for ``export.json``."""
    table = profile.profile_table()
    free_text = []
    for name in FREE_TEXT:
        tag = profile.as_tuple(name)
        code = table.get(tag) or profile.EXTRA_RULES.get(tag, ("",))[0]
        if name == "StructureSetLabel":
            done = f'set to "{profile.STRUCTURE_SET_LABEL}" (Type 1; the profile\'s D asks for a dummy)'
        elif name == "RTPlanLabel":
            done = 'set to "PLAN1", "PLAN2", ... in the order of the new SOP Instance UIDs (Type 1; D)'
        else:
            done = {"X": "removed", "Z": "emptied"}.get(code, code)
        free_text.append(
            {"attribute": name, "tag": profile.tag_text(tag), "profile": code if tag in table else "-", "export": done}
        )
    return {
        "kept_against_profile": [
            {
                "attribute": profile.keyword(tag),
                "tag": profile.tag_text(tag),
                "profile": table.get(tag, "-"),
                "export": "kept",
                "why": why,
            }
            for tag, why in profile.KEPT_AGAINST_PROFILE.items()
        ],
        "beyond_profile": [
            {"attribute": profile.keyword(tag), "tag": profile.tag_text(tag), "export": code, "why": why}
            for tag, (code, why) in profile.EXTRA_RULES.items()
        ]
        + [
            {
                "attribute": "PatientID, PatientName",
                "export": "set to the course key",
                "why": "a pseudonym (HMAC of the site secret), the same key as the research tables",
            },
            {
                "attribute": "File Meta Information",
                "export": "rebuilt",
                "why": "class, instance and transfer syntax only: no source AE titles or implementation identifiers",
            },
        ],
        "free_text": free_text,
        "pipeline_attributes": pipeline_attributes(),
        "sequences": {
            "X/Z/U*": "kept; the instance UIDs it contains are replaced (U*)",
            "Z, X/Z": "zero items",
            "X/D, X/Z/D": "removed",
            "D, Z/D": "every contained value replaced by a dummy",
        },
    }


def pipeline_attributes() -> dict:
    """What the profile does to each attribute the pipeline reads, and what the export does instead."""
    table = profile.profile_table()
    untouched, acted = [], []
    for name in PIPELINE_ATTRIBUTES:
        tag = profile.as_tuple(name)
        code = table.get(tag)
        if code is None:
            untouched.append(name)
            continue
        if tag in profile.KEPT_AGAINST_PROFILE:
            done = "kept (against the profile)"
        elif name in ("PatientID", "PatientName"):
            done = "set to the course key"
        elif code == "U":
            done = "replaced by its HMAC UID, identically in every object of the export: references resolve"
        else:
            done = code
        acted.append({"attribute": name, "tag": profile.tag_text(tag), "profile": code, "export": done})
    return {"untouched_by_profile": untouched, "acted_on_by_profile": acted}
