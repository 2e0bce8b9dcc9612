"""Header-only reading of one DICOM file into a flat record for the index.

Each file is read from disk once: the bytes are hashed (sha256, for the manifest and
the course fingerprint) and the header is parsed from memory with
``stop_before_pixels`` so Pixel Data is never decoded. Completeness is checked
without decoding pixels: the last header element and the Pixel Data element must
both end inside the file, which catches a copy cut off mid-transfer.
"""

from __future__ import annotations

import hashlib
import io
import struct
from dataclasses import dataclass, field
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from rt_resources.dicom import sop_classes as sc

_PIXEL_DATA_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # Pixel, Float Pixel, Double Float
_UNDEFINED_LENGTH = 0xFFFFFFFF
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


class HeaderError(ValueError):
    """A file that cannot be used, with a reason a person understands."""


@dataclass
class HeaderRecord:
    """What the index keeps of one usable DICOM file (no pixel data)."""

    kind: sc.Kind
    sop_class_uid: str
    sop_instance_uid: str
    modality: str
    patient_id: str
    patient_name: str
    study_uid: str
    series_uid: str
    for_uid: str
    info: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.kind = sc.Kind(self.kind)  # as read back from the index: a plain string


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_header(data: bytes) -> HeaderRecord:
    """Parse the header of a DICOM Part 10 file held in memory.

    Raises :class:`HeaderError` for non-DICOM data, DICOMDIR files, truncated files,
    unsupported SOP classes and objects without the UIDs the pipeline links on.
    """
    fp = io.BytesIO(data)
    try:
        ds = pydicom.dcmread(fp, stop_before_pixels=True)
    except InvalidDicomError as exc:
        raise HeaderError("not a DICOM file (no 'DICM' preamble / File Meta Information)") from exc
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise HeaderError(f"corrupt DICOM header: {type(exc).__name__}: {exc}") from exc
    pixel_offset = fp.tell()
    _check_header_complete(ds, len(data))

    media_class = _ascii(ds.file_meta, 0x00020002)
    if media_class == sc.MEDIA_STORAGE_DIRECTORY:
        raise HeaderError("DICOMDIR (media directory index), not an image or RT object; ignored")
    try:
        sop_class_uid = _ascii(ds, 0x00080016) or media_class
        modality = _ascii(ds, 0x00080060)
        kind, reason = sc.classify(sop_class_uid, modality)
        if kind is None:
            raise HeaderError(reason or "unsupported object")
        if kind in sc.PIXEL_KINDS:
            _check_pixel_data_complete(data, pixel_offset, ds)
        sop_instance_uid = _ascii(ds, 0x00080018)
        if not sop_instance_uid:
            raise HeaderError(f"{kind} without SOPInstanceUID (0008,0018)")
        record = HeaderRecord(
            kind=kind,
            sop_class_uid=sop_class_uid,
            sop_instance_uid=sop_instance_uid,
            modality=modality,
            patient_id=str(ds.get("PatientID", "")),
            patient_name=str(ds.get("PatientName", "")),
            study_uid=_ascii(ds, 0x0020000D),
            series_uid=_ascii(ds, 0x0020000E),
            for_uid=_ascii(ds, 0x00200052),
        )
        record.info = _INFO_READERS.get(kind, _no_info)(ds)
    except HeaderError:
        raise
    except Exception as exc:  # a malformed nested sequence, a bad value
        raise HeaderError(f"malformed DICOM header: {type(exc).__name__}: {exc}") from exc
    if kind == "RTSTRUCT" and not record.for_uid:
        # RTSTRUCT carries its frame of reference in ReferencedFrameOfReferenceSequence,
        # not at top level (PS3.3 C.8.8.5); fall back to the ROIs' references.
        fors = record.info.get("ref_for_uids") or record.info.get("roi_for_uids") or []
        record.for_uid = fors[0] if fors else ""
    return record


def _check_header_complete(ds: Dataset, size: int) -> None:
    """Fail when the last parsed header element runs past the end of the file."""
    tags = list(ds.keys())
    if not tags:
        raise HeaderError("truncated or empty DICOM file: no data elements after the file meta")
    raw = ds.get_item(tags[-1])
    value_tell = getattr(raw, "value_tell", None)
    length = getattr(raw, "length", None)
    if value_tell is not None and length not in (None, _UNDEFINED_LENGTH):
        if value_tell + length > size:
            raise HeaderError(f"truncated file: element {tags[-1]} needs {value_tell + length} bytes, file has {size}")


def _check_pixel_data_complete(data: bytes, offset: int, ds: Dataset) -> None:
    """Fail unless a Pixel Data element starts at ``offset`` and ends inside the file."""
    size = len(data)
    if offset + 8 > size:
        raise HeaderError("truncated file: Pixel Data (7FE0,0010) is missing")
    group, elem = struct.unpack_from("<HH", data, offset)
    tag = (group << 16) | elem
    if tag not in _PIXEL_DATA_TAGS:
        raise HeaderError(f"truncated file: expected Pixel Data at byte {offset}, found tag {tag:08X}")
    if ds.file_meta.TransferSyntaxUID == pydicom.uid.ImplicitVRLittleEndian:
        (length,) = struct.unpack_from("<I", data, offset + 4)
        header = 8
    else:
        vr = data[offset + 4 : offset + 6]
        if vr in _LONG_VRS:
            if offset + 12 > size:
                raise HeaderError("truncated file: Pixel Data element header is cut off")
            (length,) = struct.unpack_from("<I", data, offset + 8)
            header = 12
        else:
            (length,) = struct.unpack_from("<H", data, offset + 6)
            header = 8
    if length == _UNDEFINED_LENGTH:  # encapsulated: must end with a Sequence Delimitation Item
        if data[-8:-4] != b"\xfe\xff\xdd\xe0":
            raise HeaderError("truncated file: encapsulated Pixel Data has no end delimiter")
        return
    if offset + header + length > size:
        raise HeaderError(f"truncated file: Pixel Data needs {length} bytes, only {size - offset - header} present")


def _ascii(ds: Dataset, tag: int) -> str:
    """A single-valued ASCII element (UI, CS, IS) straight from its raw bytes.

    Much cheaper than pydicom's value conversion, which dominated the cold scan; only for
    VRs whose character repertoire is ASCII by definition (PS3.5 6.2). Names and IDs,
    which follow SpecificCharacterSet, go through pydicom.
    """
    elem = ds.get_item(tag)
    if elem is None:
        return ""
    value = elem.value
    if isinstance(value, bytes):
        return value.decode("ascii", "replace").strip("\x00 ")
    return "" if value is None else str(value).strip()


def _uids(items: Any, attr: str) -> list[str]:
    return [str(getattr(item, attr)) for item in (items or []) if getattr(item, attr, None)]


def _no_info(ds: Dataset) -> dict[str, Any]:
    return {}


def _image_info(ds: Dataset) -> dict[str, Any]:
    number = _ascii(ds, 0x00200013)
    return {"instance_number": int(number) if number.lstrip("+-").isdigit() else 0}


def _struct_info(ds: Dataset) -> dict[str, Any]:
    ref_for, ref_study, ref_series = [], [], []
    for for_item in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        if for_item.get("FrameOfReferenceUID"):
            ref_for.append(str(for_item.FrameOfReferenceUID))
        for study in for_item.get("RTReferencedStudySequence", []) or []:
            if study.get("ReferencedSOPInstanceUID"):
                ref_study.append(str(study.ReferencedSOPInstanceUID))
            ref_series += _uids(study.get("RTReferencedSeriesSequence"), "SeriesInstanceUID")
    roi_for = sorted(set(_uids(ds.get("StructureSetROISequence"), "ReferencedFrameOfReferenceUID")))
    return {
        "ref_for_uids": ref_for,
        "ref_study_uids": ref_study,
        "ref_series_uids": ref_series,
        "roi_for_uids": roi_for,
        "n_rois": len(ds.get("StructureSetROISequence", []) or []),
    }


def _plan_info(ds: Dataset) -> dict[str, Any]:
    return {
        "ref_struct_uids": _uids(ds.get("ReferencedStructureSetSequence"), "ReferencedSOPInstanceUID"),
    }


def _dose_info(ds: Dataset) -> dict[str, Any]:
    beams: list[int] = []
    for plan in ds.get("ReferencedRTPlanSequence", []) or []:
        for group in plan.get("ReferencedFractionGroupSequence", []) or []:
            beams += [int(b.ReferencedBeamNumber) for b in group.get("ReferencedBeamSequence", []) or []]
    return {
        "ref_plan_uids": _uids(ds.get("ReferencedRTPlanSequence"), "ReferencedSOPInstanceUID"),
        "summation_type": str(ds.get("DoseSummationType", "")),
        "dose_units": str(ds.get("DoseUnits", "")),
        "dose_type": str(ds.get("DoseType", "")),
        "ref_beam_numbers": beams,
    }


def _reg_info(ds: Dataset) -> dict[str, Any]:
    reg_for = _uids(ds.get("RegistrationSequence"), "FrameOfReferenceUID")
    for item in ds.get("DeformableRegistrationSequence", []) or []:
        if item.get("SourceFrameOfReferenceUID"):
            reg_for.append(str(item.SourceFrameOfReferenceUID))
    return {"reg_for_uids": sorted(set(reg_for))}


_INFO_READERS = {
    "CT": _image_info,
    "MR": _image_info,
    "PT": _image_info,
    "RTSTRUCT": _struct_info,
    "RTPLAN": _plan_info,
    "RTDOSE": _dose_info,
    "REG": _reg_info,
}
