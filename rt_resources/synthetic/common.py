"""Shared DICOM plumbing: deterministic UIDs, common modules, Part 10 writing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from .geometry import Grid
from .options import SynthFile, SynthOptions
from .phantom import Phantom

MANUFACTURER = "rtpipeline-synth"
IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["rtpipeline-synth", "implementation"])
IMPLEMENTATION_VERSION = "RTSYNTH_1"
# Fixed dates/times keep output byte-for-byte reproducible.
COURSE_DATES = {1: ("20240115", "093000"), 2: ("20240715", "101500")}


class UidFactory:
    """Deterministic UIDs: the same (seed, index, role) always gives the same UID."""

    def __init__(self, seed: int, index: int) -> None:
        self.seed = seed
        self.index = index

    def __call__(self, role: str) -> str:
        return str(
            generate_uid(
                entropy_srcs=[
                    "rtpipeline-synth",
                    f"seed={self.seed}",
                    f"index={self.index}",
                    role,
                ]
            )
        )


def ds_str(value: float) -> str:
    """Format a number for a DS element: at most 6 decimals, no trailing zeros, no '-0'."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    if text in ("-0", ""):
        text = "0"
    if len(text) > 16:
        text = f"{float(value):.8e}"  # at most 15 characters
    return text


def ds_list(values: Iterable[float]) -> list[str]:
    """``ds_str`` of each value, for multi-valued DS elements."""
    return [ds_str(v) for v in values]


def set_raw_ds(ds: Dataset, keyword: str, values: list[str]) -> None:
    """Set a multi-valued DS element from ready-formatted strings, bypassing conversion.

    Much faster than assigning a list (no per-value DS objects); the bytes are
    written as given, padded to even length with a space.  ``ds`` is marked as
    already Explicit VR Little Endian so the writer keeps raw elements raw; only
    use it on datasets (sequence items) that are written that way and hold ASCII.
    """
    text = "\\".join(values).encode("ascii")
    if len(text) % 2:
        text += b" "
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, "DS", len(text), text, 0, False, True, True, False)
    ds.set_original_encoding(False, True, "iso8859")


def seq(*items: Dataset) -> Sequence:
    """A DICOM sequence of ``items``."""
    return Sequence(list(items))


def item(**elements: object) -> Dataset:
    """A sequence item with the given keyword elements."""
    ds = Dataset()
    for keyword, value in elements.items():
        setattr(ds, keyword, value)
    return ds


@dataclass(frozen=True)
class CourseContext:
    """What every object of one course shares."""

    options: SynthOptions
    uid: UidFactory
    index: int
    course_number: int
    patient_id: str
    patient_name: str
    study_uid: str
    frame_of_reference_uid: str
    phantom: Phantom
    ct_grid: Grid
    folder: Path

    @property
    def date(self) -> str:
        return COURSE_DATES.get(self.course_number, COURSE_DATES[1])[0]

    @property
    def time(self) -> str:
        return COURSE_DATES.get(self.course_number, COURSE_DATES[1])[1]

    def role(self, name: str) -> str:
        """UID of the object ``name`` of this course."""
        return self.uid(f"course{self.course_number}/{name}")

    def rng(self, purpose: str) -> np.random.Generator:
        """Seeded random generator for (seed, index, course, purpose)."""
        tag = sum(ord(ch) * (i + 1) for i, ch in enumerate(purpose))
        return np.random.default_rng([self.options.seed, self.index, self.course_number, tag])


def base_dataset(
    ctx: CourseContext,
    *,
    sop_class_uid: str,
    sop_instance_uid: str,
    modality: str,
    series_uid: str,
    series_number: int,
    series_description: str,
    instance_number: int = 1,
) -> Dataset:
    """Dataset with file meta, Patient, General Study, General Series, Equipment and SOP Common."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class_uid
    meta.MediaStorageSOPInstanceUID = sop_instance_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION

    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid
    ds.InstanceCreationDate = ctx.date
    ds.InstanceCreationTime = ctx.time
    ds.StudyDate = ctx.date
    ds.StudyTime = ctx.time
    ds.SeriesDate = ctx.date
    ds.SeriesTime = ctx.time
    ds.AccessionNumber = f"SYN{ctx.index:03d}-{ctx.course_number}"
    ds.Modality = modality
    ds.Manufacturer = MANUFACTURER
    ds.ReferringPhysicianName = "Synthetic^Referrer"
    ds.StationName = "SYNTH"
    ds.StudyDescription = f"Synthetic RT course {ctx.course_number}"
    ds.SeriesDescription = series_description
    ds.ManufacturerModelName = "synthetic"
    ds.SoftwareVersions = IMPLEMENTATION_VERSION
    ds.PatientName = ctx.patient_name
    ds.PatientID = ctx.patient_id
    ds.PatientBirthDate = f"{1940 + ctx.index % 40}0101"
    ds.PatientSex = "M" if ctx.index % 2 == 0 else "F"
    ds.StudyInstanceUID = ctx.study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(ctx.course_number)
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    return ds


def set_image_plane(
    ds: Dataset, grid: Grid, k: int, for_uid: str, patient_position: str, thickness_mm: float, stored: np.ndarray
) -> None:
    """Frame of reference, Image Plane and Image Pixel modules of slice ``k`` of ``grid``
    (``stored``: the slice as little-endian 16-bit integers, signed or unsigned)."""
    position = grid.slice_position(k)
    ds.PatientPosition = patient_position
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    ds.ImagePositionPatient = ds_list(position)
    ds.ImageOrientationPatient = ds_list(grid.orientation)
    ds.SliceThickness = ds_str(thickness_mm)
    ds.SliceLocation = ds_str(position[2])
    ds.PixelSpacing = ds_list([grid.spacing[1], grid.spacing[0]])
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = grid.shape[1]
    ds.Columns = grid.shape[2]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1 if stored.dtype.kind == "i" else 0
    ds.PixelData = stored.tobytes()
    ds["PixelData"].VR = "OW"


def save(ds: Dataset, path: Path) -> SynthFile:
    """Write ``ds`` as a DICOM Part 10 file (Explicit VR Little Endian) and describe it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return SynthFile(path=path, modality=str(ds.Modality), sop_instance_uid=str(ds.SOPInstanceUID))
