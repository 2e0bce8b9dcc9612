"""PET Image Storage series: an FDG PET/CT of the phantom with vendor-specific SUV headers.

The PET belongs to the planning CT's PET/CT: same study, same FrameOfReferenceUID (no REG),
its own series (SeriesNumber 7), written as ``PT/PT_0001.dcm ...``.

Ground truth. The activity is a digital reference object in the spirit of the QIBA FDG-PET/CT
DRO: piecewise-constant SUVbw (g/ml) sampled at voxel centres, with no partial-volume
averaging, no PSF and no noise, so a reader must find SUVmax = ``PET_LESION_SUV`` exactly (up
to the int16 quantisation, < 1e-4 relative) and a metabolic volume equal to the number of voxel
centres inside the lesion times the voxel volume. Uptake by tissue (``pet_suv``): air 0, BODY
soft tissue and cord ``PET_BACKGROUND_SUV`` (1.0), lungs ``PET_LUNG_SUV`` (0.4), heart
``PET_HEART_SUV`` (2.0), bone ``PET_BONE_SUV`` (1.5), and the lesion ``PET_LESION_SUV`` (8.0): a
sphere centred on the PTV with radius PTV radius + ``PET_LESION_MARGIN_MM`` (8 mm), cut to BODY
(it lies inside BODY at the sizes used). The PTV therefore lies in uniform uptake (SUVmean 8)
and every organ stays below 2.5 and below 40 % of SUVmax (3.2): a 40 % or SUV 2.5 threshold in
BODY finds exactly the lesion.

Grid (``pet_grid``): axis-aligned like the CT (the IOP of the patient position), centred on the
phantom, pixels 0.8 x the CT's, covering BODY + 10 mm (rows != columns), slices 0.6 x the CT
slice spacing over at least the CT's z extent: different from the CT's grid, and finer than a
coarse test CT's. Never finer than a clinical PET (4 mm pixels, 2 mm slices): on the realistic
preset's 0.98 mm CT the factors alone would give a 47-million-voxel PET no scanner writes.

Stored activity (Bq/ml), decay-corrected to the scan start (DecayCorrection START)::

    decayed_dose_bq = PET_TOTAL_DOSE_BQ * 2 ** (-PET_UPTAKE_S / PET_HALF_LIFE_S)
    A_bq_ml         = SUVbw * decayed_dose_bq / (PET_WEIGHT_KG * 1000)
    SUVbw           = A_bq_ml * PET_WEIGHT_KG * 1000 / decayed_dose_bq

with the injection ``PET_UPTAKE_S`` (3480 s = 58 min) before the scan start. Pixels are int16
with a RescaleSlope per slice (the slice maximum stored as about 32000; slopes differ between
slices) and RescaleIntercept 0. Per vendor, so that each SUV branch of a reader (the QIBA
vendor-neutral pseudo-code) is exercised; each gives the uptake 3480 s when read by its rules:

- ``siemens``: Units BQML; SeriesDate/Time = scan start; two beds, the second bed's slices
  (AcquisitionTime) ``PET_BED_DELAY_S`` later, so every AcquisitionTime >= SeriesTime and the
  series time is the scan time; RadiopharmaceuticalStartDateTime (and StartTime).
- ``ge``: Units BQML; the series was re-processed: SeriesTime = scan start +
  ``PET_GE_REPROCESS_DELAY_S`` (1 h), later than AcquisitionTime, so the scan time comes from
  the GE private scan DateTime (0009,100D) (creator ``GEMS_PETD_01``, VR DT); only
  RadiopharmaceuticalStartTime (no start date: the scan date applies).
- ``philips``: Units CNTS; stored * RescaleSlope gives counts, with Bq/ml = counts *
  ``PHILIPS_BQML_PER_COUNT``; private group 7053 (creator ``Philips PET Private Group``):
  (7053,1000) SUV Scale Factor (SUVbw = rescaled value * factor) and (7053,1009) Activity
  Concentration Scale Factor (Bq/ml = rescaled value * factor); RadiopharmaceuticalStartDateTime.

``cycle`` picks the vendor by patient index (0 siemens, 1 ge, 2 philips, 3 siemens, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import PositronEmissionTomographyImageStorage

from .common import CourseContext, base_dataset, ds_str, item, save, seq, set_image_plane
from .geometry import Grid, centred_grid
from .options import PET_VENDORS, SynthFile, SynthOptions
from .phantom import Ellipsoid, Phantom

PET_LESION_SUV = 8.0
PET_BACKGROUND_SUV = 1.0  # BODY soft tissue and cord
PET_LUNG_SUV = 0.4
PET_HEART_SUV = 2.0
PET_BONE_SUV = 1.5
PET_AIR_SUV = 0.0
PET_LESION_MARGIN_MM = 8.0  # lesion radius = PTV radius + this

PET_WEIGHT_KG = 72.5
PET_HEIGHT_M = 1.76
PET_TOTAL_DOSE_BQ = 350e6  # RadionuclideTotalDose at injection
PET_HALF_LIFE_S = 6586.2  # F-18, 109.77 min
PET_POSITRON_FRACTION = 0.9673
PET_UPTAKE_S = 3480  # injection to scan start, s (58 min)
PET_SCAN_OFFSET_S = 300  # scan start after the planning CT's study time, s
PET_BED_DELAY_S = 180  # second bed starts this much after the first; also the frame duration
PET_GE_REPROCESS_DELAY_S = 3600  # GE SeriesTime after the scan start (re-processed series)
PHILIPS_BQML_PER_COUNT = 1.8  # Philips CNTS: Bq/ml per count
PET_PIXEL_FACTOR = 0.8  # PET pixel spacing / CT pixel spacing
PET_SLICE_FACTOR = 0.6  # PET slice spacing / CT slice spacing
PET_MIN_PIXEL_MM = 4.0  # a clinical PET's pixels (whole-body FDG, 128-200 matrix)
PET_MIN_SLICE_MM = 2.0  # and slices
PET_MARGIN_MM = 10.0
PET_STORED_MAX = 32000  # stored value of each slice's maximum (int16)
PET_SERIES_NUMBER = 7

GE_PRIVATE_CREATOR = "GEMS_PETD_01"
PHILIPS_PRIVATE_CREATOR = "Philips PET Private Group"


@dataclass(frozen=True)
class PetSeries:
    """The written PET series."""

    series_uid: str
    vendor: str
    decayed_dose_bq: float  # RadionuclideTotalDose decayed to the scan start
    slice_uids: list[str]  # SOP Instance UIDs in slice order (InstanceNumber 1..n)
    files: list[SynthFile]
    grid: Grid


def pet_vendor(options: SynthOptions, index: int) -> str:
    """The vendor whose headers patient ``index`` gets ("" without PET; ``cycle`` by index)."""
    if options.pet == "cycle":
        return PET_VENDORS[index % len(PET_VENDORS)]
    return options.pet


def pet_decayed_dose_bq(uptake_s: float = PET_UPTAKE_S) -> float:
    """``PET_TOTAL_DOSE_BQ`` decayed over ``uptake_s`` seconds (F-18 half-life), Bq."""
    return PET_TOTAL_DOSE_BQ * 2.0 ** (-uptake_s / PET_HALF_LIFE_S)


def pet_lesion(phantom: Phantom) -> Ellipsoid:
    """The FDG-avid lesion: a sphere on the PTV centre, radius PTV radius + margin (mm)."""
    radius = phantom.ptv.semi_axes[0] + PET_LESION_MARGIN_MM
    return Ellipsoid(phantom.ptv.centre, (radius, radius, radius))


def pet_suv(phantom: Phantom, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    """Noise-free SUVbw (g/ml) at patient points (mm) of ``phantom`` (the CT's frame of reference)."""
    x, y, z = np.broadcast_arrays(np.asarray(x, float), np.asarray(y, float), np.asarray(z, float))
    body = phantom.body.contains(x, y, z)
    out = np.full(x.shape, PET_AIR_SUV)
    out[body] = PET_BACKGROUND_SUV
    out[phantom.lung_l.contains(x, y, z)] = PET_LUNG_SUV
    out[phantom.lung_r.contains(x, y, z)] = PET_LUNG_SUV
    out[phantom.heart.contains(x, y, z)] = PET_HEART_SUV
    out[phantom.spine.contains(x, y, z)] = PET_BONE_SUV
    out[phantom.cord.contains(x, y, z)] = PET_BACKGROUND_SUV
    out[pet_lesion(phantom).contains(x, y, z) & body] = PET_LESION_SUV
    return out


def pet_grid(ctx: CourseContext) -> Grid:
    """PET grid in the CT's patient coordinates: centred on the phantom, BODY + margin in-plane,
    at least the CT's z extent."""
    opts = ctx.options
    ax, ay, _ = ctx.phantom.body.semi_axes
    step = max(PET_PIXEL_FACTOR * opts.pixel_mm, PET_MIN_PIXEL_MM)
    cols = math.ceil(2 * (ax + PET_MARGIN_MM) / step) + 1
    rows = math.ceil(2 * (ay + PET_MARGIN_MM) / step) + 1
    slice_step = max(PET_SLICE_FACTOR * opts.slice_mm, PET_MIN_SLICE_MM)
    slices = max(4, math.ceil((opts.slices - 1) * opts.slice_mm / slice_step) + 1)
    return centred_grid(ctx.phantom.centre, (slices, rows, cols), (step, step, slice_step), opts.patient_position)


def _ds_precise(value: float) -> str:
    """A DS string with 10 significant digits (at most 16 characters), for scale factors."""
    return f"{float(value):.10g}"


def _da_tm(when: datetime) -> tuple[str, str]:
    return when.strftime("%Y%m%d"), when.strftime("%H%M%S")


def _frame_timing(delay_s: float) -> tuple[float, float]:
    """(DecayFactor, FrameReferenceTime in ms) of a frame of ``PET_BED_DELAY_S`` duration
    starting ``delay_s`` after the decay-correction reference (DICOM C.8.9.4.1.5/.6)."""
    lam = math.log(2.0) / PET_HALF_LIFE_S
    duration = float(PET_BED_DELAY_S)
    in_frame = lam * duration / (1.0 - math.exp(-lam * duration))  # decay during the frame
    decay_factor = math.exp(lam * delay_s) * in_frame
    reference_ms = 1000.0 * (delay_s + math.log(in_frame) / lam)
    return decay_factor, reference_ms


def _isotope(injection: datetime, with_date: bool) -> Dataset:
    info = item(
        RadiopharmaceuticalRoute="Intravenous route",
        Radiopharmaceutical="Fluorodeoxyglucose",
        RadiopharmaceuticalStartTime=injection.strftime("%H%M%S"),
        RadionuclideTotalDose=ds_str(PET_TOTAL_DOSE_BQ),
        RadionuclideHalfLife=ds_str(PET_HALF_LIFE_S),
        RadionuclidePositronFraction=ds_str(PET_POSITRON_FRACTION),
        RadionuclideCodeSequence=seq(
            item(CodeValue="C-111A1", CodingSchemeDesignator="SRT", CodeMeaning="^18^Fluorine")
        ),
        RadiopharmaceuticalCodeSequence=seq(
            item(CodeValue="C-B1031", CodingSchemeDesignator="SRT", CodeMeaning="Fluorodeoxyglucose F^18^")
        ),
    )
    if with_date:
        info.RadiopharmaceuticalStartDateTime = injection.strftime("%Y%m%d%H%M%S")
    return info


def _orientation_codes(ds: Dataset, patient_position: str) -> None:
    """NM/PET Patient Orientation module (SNOMED-RT codes of the patient position)."""
    prone = patient_position.endswith("P")
    ds.PatientOrientationCodeSequence = seq(
        item(
            CodeValue="F-10450",
            CodingSchemeDesignator="SRT",
            CodeMeaning="recumbent",
            PatientOrientationModifierCodeSequence=seq(
                item(
                    CodeValue="F-10310" if prone else "F-10340",
                    CodingSchemeDesignator="SRT",
                    CodeMeaning="prone" if prone else "supine",
                )
            ),
        )
    )
    head_first = patient_position.startswith("H")
    ds.PatientGantryRelationshipCodeSequence = seq(
        item(
            CodeValue="F-10470" if head_first else "F-10480",
            CodingSchemeDesignator="SRT",
            CodeMeaning="headfirst" if head_first else "feet-first",
        )
    )


def write_pet(ctx: CourseContext, folder: Path) -> PetSeries:
    """Write the PET series of ``ctx`` (vendor from ``pet_vendor``) into ``folder`` as PT_0001.dcm ..."""
    opts = ctx.options
    vendor = pet_vendor(opts, ctx.index)
    if vendor not in PET_VENDORS:
        raise ValueError(f"no PET vendor for SynthOptions.pet={opts.pet!r}; use one of {PET_VENDORS} or 'cycle'")
    grid = pet_grid(ctx)
    series_uid = ctx.role("pet/series")
    scan = datetime.strptime(ctx.date + ctx.time, "%Y%m%d%H%M%S") + timedelta(seconds=PET_SCAN_OFFSET_S)
    injection = scan - timedelta(seconds=PET_UPTAKE_S)
    series_time = scan + timedelta(seconds=PET_GE_REPROCESS_DELAY_S) if vendor == "ge" else scan
    decayed_dose = pet_decayed_dose_bq(PET_UPTAKE_S)
    bq_ml_per_suv = decayed_dose / (PET_WEIGHT_KG * 1000.0)
    # Philips: the SUV factor is written first and the counts derived from it, so that
    # rescaled * (7053,1000) gives the SUV to the precision of the stored integers
    suv_factor_text = _ds_precise(PHILIPS_BQML_PER_COUNT / bq_ml_per_suv)
    suv_per_value = float(suv_factor_text) if vendor == "philips" else 1.0 / bq_ml_per_suv
    n_slices = grid.shape[0]
    files: list[SynthFile] = []
    uids: list[str] = []
    for k in range(n_slices):
        suv = pet_suv(ctx.phantom, *grid.slice_points(k))
        values = suv / suv_per_value  # Bq/ml (BQML) or counts (CNTS)
        peak = float(values.max())
        slope_text = _ds_precise(peak / PET_STORED_MAX if peak > 0 else 1.0)
        stored = np.round(values / float(slope_text)).astype("<i2")
        delay_s = PET_BED_DELAY_S if k >= n_slices // 2 else 0  # bed 2: the second half of the slices
        acquisition = scan + timedelta(seconds=delay_s)
        decay_factor, reference_ms = _frame_timing(delay_s)
        uid = ctx.role(f"pet/slice/{k + 1}")
        ds = base_dataset(
            ctx,
            sop_class_uid=PositronEmissionTomographyImageStorage,
            sop_instance_uid=uid,
            modality="PT",
            series_uid=series_uid,
            series_number=PET_SERIES_NUMBER,
            series_description=f"PET FDG synthetic ({vendor})",
            instance_number=k + 1,
        )
        ds.SeriesDate, ds.SeriesTime = _da_tm(series_time)
        ds.ContentDate, ds.ContentTime = _da_tm(series_time)
        ds.AcquisitionDate, ds.AcquisitionTime = _da_tm(acquisition)
        ds.PatientWeight = ds_str(PET_WEIGHT_KG)
        ds.PatientSize = ds_str(PET_HEIGHT_M)
        ds.ImageType = ["ORIGINAL", "PRIMARY"]
        ds.SeriesType = ["WHOLE BODY", "IMAGE"]
        ds.Units = "CNTS" if vendor == "philips" else "BQML"
        ds.CountsSource = "EMISSION"
        ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "NORM", "DTIM", "RAN"]
        ds.DecayCorrection = "START"
        ds.RandomsCorrectionMethod = "DLYD"
        ds.AttenuationCorrectionMethod = "CT-based"
        ds.ScatterCorrectionMethod = "model-based"
        ds.ReconstructionMethod = "OSEM"
        ds.NumberOfSlices = n_slices
        ds.ImageIndex = k + 1
        ds.AcquisitionNumber = 1 if delay_s == 0 else 2
        ds.ActualFrameDuration = PET_BED_DELAY_S * 1000
        ds.FrameReferenceTime = ds_str(reference_ms)
        ds.DecayFactor = ds_str(decay_factor)
        ds.RadiopharmaceuticalInformationSequence = seq(_isotope(injection, with_date=vendor != "ge"))
        _orientation_codes(ds, opts.patient_position)
        set_image_plane(ds, grid, k, ctx.frame_of_reference_uid, opts.patient_position, grid.spacing[2], stored)
        ds.SpacingBetweenSlices = ds_str(grid.spacing[2])
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = slope_text
        if vendor != "philips":
            ds.RescaleType = "BQML"
        if vendor == "ge":
            scan_dt = scan.strftime("%Y%m%d%H%M%S")
            ds.private_block(0x0009, GE_PRIVATE_CREATOR, create=True).add_new(0x0D, "DT", scan_dt)
        elif vendor == "philips":
            block = ds.private_block(0x7053, PHILIPS_PRIVATE_CREATOR, create=True)
            block.add_new(0x00, "DS", suv_factor_text)
            block.add_new(0x09, "DS", _ds_precise(PHILIPS_BQML_PER_COUNT))
        files.append(save(ds, folder / f"PT_{k + 1:04d}.dcm"))
        uids.append(uid)
    return PetSeries(
        series_uid=series_uid,
        vendor=vendor,
        decayed_dose_bq=decayed_dose,
        slice_uids=uids,
        files=files,
        grid=grid,
    )
