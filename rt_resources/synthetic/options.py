"""Option and result records of the synthetic DICOM-RT generator."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

PATIENT_POSITIONS = ("HFS", "FFS", "HFP", "FFP")
PET_VENDORS = ("siemens", "ge", "philips")  # whose SUV headers a PET series gets
PET_CHOICES = (*PET_VENDORS, "cycle")  # "cycle": the vendor by patient index (0 siemens, 1 ge, ...)


@dataclass(frozen=True)
class SynthOptions:
    """What to generate for each patient.

    Lengths are in millimetres; the CT matrix is ``rows`` x ``rows`` x ``slices``.
    """

    rows: int = 96  # CT matrix (rows = columns)
    slices: int = 48
    pixel_mm: float = 5.0  # in-plane pixel spacing, mm
    slice_mm: float = 5.0  # slice spacing = SliceThickness, mm
    boost: bool = False  # add a boost plan + its RTDOSE on the same CT/RTSTRUCT
    second_course: bool = False  # add a second course (new study and frame of reference)
    beam_doses: bool = False  # primary dose as one RTDOSE per beam (DoseSummationType BEAM)
    patient_position: str = "HFS"  # HFS, FFS, HFP or FFP
    seed: int = 0
    mr: bool = False  # add an MR series (own frame of reference and study) and a rigid REG to the CT
    pet: str = ""  # "" (no PET) or a PET_CHOICES vendor: add a PET series in the CT's frame of reference

    def __post_init__(self) -> None:
        if self.rows < 8 or self.slices < 4:
            raise ValueError("rows must be >= 8 and slices >= 4")
        if self.pixel_mm <= 0 or self.slice_mm <= 0:
            raise ValueError("pixel_mm and slice_mm must be positive")
        if self.patient_position not in PATIENT_POSITIONS:
            raise ValueError(f"patient_position must be one of {PATIENT_POSITIONS}")
        if self.pet and self.pet not in PET_CHOICES:
            raise ValueError(f"pet must be '' (no PET) or one of {PET_CHOICES}, not {self.pet!r}")


DEFAULT_OPTIONS = SynthOptions()


@dataclass(frozen=True)
class SynthFile:
    """One written DICOM file."""

    path: Path
    modality: str
    sop_instance_uid: str


@dataclass(frozen=True)
class SynthCourse:
    """Everything a test needs to check how the files of one course link together."""

    patient_id: str
    study_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str
    struct_uid: str
    plan_uids: list[str]
    dose_uids: list[str]
    files: list[SynthFile]
    roi_names: list[str]
    prescription_gy: dict[str, float]  # plan SOP Instance UID -> TargetPrescriptionDose (Gy)
    dose_plan_uids: dict[str, str] = field(default_factory=dict)  # dose UID -> plan UID
    folder: Path | None = None
    course_number: int = 1
    # mr=True only (empty otherwise): the MR series, its frame of reference, the REG, and the
    # ground truth 4x4 matrix (row-major, 16 floats) mapping CT patient coordinates to MR ones
    mr_series_uid: str = ""
    mr_frame_of_reference_uid: str = ""
    reg_uid: str = ""
    mr_from_ct: tuple[float, ...] = ()
    # pet set only (empty otherwise): the PET series (CT's frame of reference and study), the
    # vendor whose headers it has, and RadionuclideTotalDose decayed to the scan start (Bq)
    pet_series_uid: str = ""
    pet_vendor: str = ""
    pet_decayed_dose_bq: float = 0.0


@dataclass(frozen=True)
class SynthPatient:
    """One synthetic patient folder and its courses."""

    patient_id: str
    folder: Path
    courses: list[SynthCourse]
