"""The synthetic PET/CT series: SUV read back from the written headers by each vendor's rules.

The SUV arithmetic here is written independently of any reader in ``rt_resources`` (the QIBA
vendor-neutral pseudo-code, done by hand), so the generator and the reader are cross-checked.
"""

from __future__ import annotations

import argparse
import math
from datetime import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import PositronEmissionTomographyImageStorage

from rt_resources.synthetic import (
    PET_BACKGROUND_SUV,
    PET_BONE_SUV,
    PET_HEART_SUV,
    PET_LESION_MARGIN_MM,
    PET_LESION_SUV,
    PET_LUNG_SUV,
    PET_UPTAKE_S,
    SynthOptions,
    SynthPatient,
    add_cli_arguments,
    course_context,
    options_from_args,
    pet_grid,
    pet_lesion,
    pet_suv,
    write_cohort,
    write_patient,
)
from tests.helpers import plane_points

SIZES = {"rows": 32, "slices": 12, "pixel_mm": 10.0, "slice_mm": 5.0}
#: (vendor, patient position) of each written case; one prone case checks the orientation
CASES = [("siemens", "HFS"), ("ge", "HFS"), ("philips", "HFS"), ("ge", "FFP")]
REL = 1e-3  # tolerance of a read-back SUV, relative


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], SynthPatient]:
    out = tmp_path_factory.mktemp("pet")
    return {
        (vendor, position): write_patient(
            out / f"{vendor}_{position}", 0, SynthOptions(**SIZES, patient_position=position, pet=vendor)
        )
        for vendor, position in CASES
    }


def _pet_slices(patient: SynthPatient) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(f.path) for f in patient.courses[0].files if f.modality == "PT"]


def _dt(date: str, time: str) -> datetime:
    """DA + TM (HHMMSS, optional fraction) as a datetime."""
    return datetime.strptime(date + time.split(".")[0], "%Y%m%d%H%M%S")


def _scan_and_injection(slices: list[pydicom.Dataset]) -> tuple[datetime, datetime]:
    """Scan start and injection time by the QIBA rules: the series time unless an acquisition
    started before it (a re-processed series), then the GE private scan DateTime (0009,100D);
    the injection from RadiopharmaceuticalStartDateTime, else StartTime on the scan date."""
    first = slices[0]
    series = _dt(first.SeriesDate, first.SeriesTime)
    earliest = min(_dt(ds.AcquisitionDate, ds.AcquisitionTime) for ds in slices)
    if series <= earliest:
        scan = series
    else:
        scan = datetime.strptime(first.private_block(0x0009, "GEMS_PETD_01")[0x0D].value[:14], "%Y%m%d%H%M%S")
    info = first.RadiopharmaceuticalInformationSequence[0]
    if "RadiopharmaceuticalStartDateTime" in info:
        injection = datetime.strptime(info.RadiopharmaceuticalStartDateTime[:14], "%Y%m%d%H%M%S")
    else:
        injection = _dt(scan.strftime("%Y%m%d"), info.RadiopharmaceuticalStartTime)
    return scan, injection


def _decayed_dose_bq(slices: list[pydicom.Dataset]) -> float:
    scan, injection = _scan_and_injection(slices)
    info = slices[0].RadiopharmaceuticalInformationSequence[0]
    uptake_s = (scan - injection).total_seconds()
    return float(info.RadionuclideTotalDose) * 2.0 ** (-uptake_s / float(info.RadionuclideHalfLife))


def _suv_per_rescaled(slices: list[pydicom.Dataset]) -> float:
    """SUVbw per rescaled pixel value: BQML by the decay arithmetic, CNTS by Philips (7053,1000)."""
    first = slices[0]
    assert "DECY" in first.CorrectedImage and "ATTN" in first.CorrectedImage
    assert first.DecayCorrection == "START"
    if first.Units == "CNTS":
        return float(first.private_block(0x7053, "Philips PET Private Group")[0x00].value)
    assert first.Units == "BQML"
    return float(first.PatientWeight) * 1000.0 / _decayed_dose_bq(slices)


def _suv_volume(slices: list[pydicom.Dataset]) -> np.ndarray:
    """SUVbw of every voxel (slices in file order), the rescale applied slice by slice."""
    factor = _suv_per_rescaled(slices)
    return np.stack(
        [
            (ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)) * factor
            for ds in slices
        ]
    )


def _points(slices: list[pydicom.Dataset]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    per_slice = [plane_points(ds) for ds in slices]
    return tuple(np.stack([p[a] for p in per_slice]) for a in range(3))  # type: ignore[return-value]


@pytest.mark.parametrize("case", CASES, ids=[f"{v}-{p}" for v, p in CASES])
def test_suv_read_back_by_vendor_rules_equals_the_activity(written, case) -> None:
    vendor, position = case
    patient = written[case]
    slices = _pet_slices(patient)
    phantom = course_context(Path("unused"), 0, SynthOptions(**SIZES, patient_position=position)).phantom
    suv = _suv_volume(slices)
    x, y, z = _points(slices)
    expected = pet_suv(phantom, x, y, z)
    assert np.all(np.abs(suv - expected) <= REL * expected)  # air reads exactly 0
    lesion = pet_lesion(phantom).contains(x, y, z)
    assert lesion.sum() > 50
    assert np.allclose(suv[lesion], PET_LESION_SUV, rtol=REL, atol=0)
    assert suv.max() == pytest.approx(PET_LESION_SUV, rel=1e-4)
    body = phantom.body.contains(x, y, z)
    for organ, value in [
        (phantom.lung_l, PET_LUNG_SUV),
        (phantom.lung_r, PET_LUNG_SUV),
        (phantom.heart, PET_HEART_SUV),
        (phantom.spine, PET_BONE_SUV),
        (phantom.cord, PET_BACKGROUND_SUV),
    ]:
        inside = organ.contains(x, y, z) & ~lesion
        assert inside.sum() > 0
        assert np.allclose(suv[inside], value, rtol=REL, atol=0)
    assert suv[~body].max() == 0.0
    # a 40 % of SUVmax or SUV 2.5 threshold in BODY finds exactly the lesion's voxel centres
    assert np.array_equal((suv >= 0.4 * suv.max()) & body, lesion)
    assert np.array_equal((suv >= 2.5) & body, lesion)
    # the PTV lies in uniform uptake
    ptv = phantom.ptv.contains(x, y, z)
    assert ptv.sum() > 0 and suv[ptv].mean() == pytest.approx(PET_LESION_SUV, rel=REL)


@pytest.mark.parametrize("case", CASES, ids=[f"{v}-{p}" for v, p in CASES])
def test_uptake_is_58_min_and_decayed_dose_matches_the_course(written, case) -> None:
    vendor, _ = case
    course = written[case].courses[0]
    slices = _pet_slices(written[case])
    scan, injection = _scan_and_injection(slices)
    assert (scan - injection).total_seconds() == PET_UPTAKE_S == 3480
    assert course.pet_vendor == vendor
    assert course.pet_decayed_dose_bq == pytest.approx(_decayed_dose_bq(slices), rel=1e-12)
    assert course.pet_decayed_dose_bq == pytest.approx(350e6 * 2 ** (-3480 / 6586.2), rel=1e-12)
    first = slices[0]
    info = first.RadiopharmaceuticalInformationSequence[0]
    assert (float(first.PatientWeight), float(first.PatientSize)) == (72.5, 1.76)
    assert info.Radiopharmaceutical == "Fluorodeoxyglucose"
    assert (float(info.RadionuclideTotalDose), float(info.RadionuclideHalfLife)) == (350e6, 6586.2)
    assert float(info.RadionuclidePositronFraction) == 0.9673
    assert info.RadionuclideCodeSequence[0].CodeValue == "C-111A1"
    assert info.RadionuclideCodeSequence[0].CodeMeaning == "^18^Fluorine"
    # using the study time (the planning CT's) would give a wrong uptake
    assert _dt(first.StudyDate, first.StudyTime) != scan


def test_pet_ct_shares_the_ct_frame_of_reference_and_study(written) -> None:
    patient = written[("siemens", "HFS")]
    course = patient.courses[0]
    slices = _pet_slices(patient)
    ct = pydicom.dcmread(next(f.path for f in course.files if f.modality == "CT"))
    assert not any(f.modality in ("REG", "MR") for f in course.files)
    assert [f.path.name for f in course.files if f.modality == "PT"] == [
        f"PT_{k:04d}.dcm" for k in range(1, len(slices) + 1)
    ]
    assert all(f.path.parent == course.folder / "PT" for f in course.files if f.modality == "PT")
    for k, ds in enumerate(slices, start=1):
        assert ds.SOPClassUID == PositronEmissionTomographyImageStorage == "1.2.840.10008.5.1.4.1.1.128"
        assert ds.Modality == "PT" and ds.SeriesNumber == 7
        assert ds.FrameOfReferenceUID == ct.FrameOfReferenceUID == course.frame_of_reference_uid
        assert ds.StudyInstanceUID == ct.StudyInstanceUID == course.study_uid
        assert ds.SeriesInstanceUID == course.pet_series_uid != course.ct_series_uid
        assert (ds.InstanceNumber, ds.ImageIndex, ds.NumberOfSlices) == (k, k, len(slices))
        assert ds.PatientID == ct.PatientID and ds.PatientSex == ct.PatientSex
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY"]
        assert list(ds.SeriesType) == ["WHOLE BODY", "IMAGE"] and ds.CountsSource == "EMISSION"
        assert ds.pixel_array.dtype == np.int16 and ds.PixelRepresentation == 1
        assert float(ds.RescaleIntercept) == 0.0
        assert "DecayFactor" in ds and "FrameReferenceTime" in ds and "ActualFrameDuration" in ds
    assert len({ds.SOPInstanceUID for ds in slices}) == len(slices)


@pytest.mark.parametrize("case", CASES, ids=[f"{v}-{p}" for v, p in CASES])
def test_grid_is_finer_than_the_ct_and_matches_pet_grid(written, case) -> None:
    _, position = case
    patient = written[case]
    slices = _pet_slices(patient)
    ct = pydicom.dcmread(next(f.path for f in patient.courses[0].files if f.modality == "CT"))
    ctx = course_context(Path("unused"), 0, SynthOptions(**SIZES, patient_position=position, pet=case[0]))
    grid = pet_grid(ctx)
    assert grid.shape == (len(slices), slices[0].Rows, slices[0].Columns)
    assert slices[0].Rows != slices[0].Columns
    assert [float(v) for v in slices[0].PixelSpacing] == pytest.approx([0.8 * SIZES["pixel_mm"]] * 2)
    assert list(slices[0].ImageOrientationPatient) == list(ct.ImageOrientationPatient)
    normal = np.cross(grid.row_dir, grid.col_dir)
    offsets = [float(np.dot(np.array(ds.ImagePositionPatient, float), normal)) for ds in slices]
    assert np.diff(offsets) == pytest.approx(0.6 * SIZES["slice_mm"])
    for k, ds in enumerate(slices):
        assert np.array(ds.ImagePositionPatient, float) == pytest.approx(grid.slice_position(k), abs=1e-6)
    # the PET covers the CT's z extent and BODY + 10 mm
    z_ct = (SIZES["slices"] - 1) * SIZES["slice_mm"] / 2
    assert (len(slices) - 1) * 0.6 * SIZES["slice_mm"] / 2 >= z_ct
    ax, ay, _ = ctx.phantom.body.semi_axes
    assert (slices[0].Columns - 1) * grid.spacing[0] >= 2 * (ax + 10)
    assert (slices[0].Rows - 1) * grid.spacing[1] >= 2 * (ay + 10)


def test_lesion_geometry_and_organ_uptake_below_the_thresholds() -> None:
    ctx = course_context(Path("unused"), 0, SynthOptions(**SIZES))
    phantom = ctx.phantom
    lesion = pet_lesion(phantom)
    assert lesion.centre == phantom.ptv.centre
    assert lesion.semi_axes == (phantom.ptv.semi_axes[0] + PET_LESION_MARGIN_MM,) * 3
    assert phantom.ptv.semi_axes[0] == pytest.approx(20.4)
    # the whole lesion sphere inside BODY (in-plane ellipse; BODY is an infinite cylinder)
    (cx, cy, _), (r, _, _) = lesion.centre, lesion.semi_axes
    bx, by, _ = phantom.body.semi_axes
    angles = np.linspace(0, 2 * math.pi, 720)
    assert np.all(phantom.body.contains(cx + r * np.cos(angles), cy + r * np.sin(angles), np.zeros_like(angles)))
    assert bx > abs(cx) + r and by > abs(cy) + r
    for organ in (PET_BACKGROUND_SUV, PET_LUNG_SUV, PET_HEART_SUV, PET_BONE_SUV):
        assert organ < 2.5 and organ < 0.4 * PET_LESION_SUV
    # the value at points: lesion over lungs/heart, air outside BODY
    assert pet_suv(phantom, cx, cy, 0.0) == PET_LESION_SUV
    assert pet_suv(phantom, 0.0, -by - 5.0, 0.0) == 0.0
    assert pet_suv(phantom, *phantom.heart.centre) == PET_HEART_SUV


@pytest.mark.parametrize("case", CASES, ids=[f"{v}-{p}" for v, p in CASES])
def test_rescale_slope_per_slice(written, case) -> None:
    slices = _pet_slices(written[case])
    slopes = [float(ds.RescaleSlope) for ds in slices]
    assert len(set(slopes)) >= 2
    for ds in slices:
        assert 30000 <= ds.pixel_array.max() <= 32767  # the slice maximum uses most of int16
        assert ds.pixel_array.min() >= 0


def test_siemens_series_time_is_the_scan_start_with_two_beds(written) -> None:
    slices = _pet_slices(written[("siemens", "HFS")])
    first = slices[0]
    assert first.Units == "BQML" and first.RescaleType == "BQML"
    series = _dt(first.SeriesDate, first.SeriesTime)
    acquisitions = sorted({_dt(ds.AcquisitionDate, ds.AcquisitionTime) for ds in slices})
    assert len(acquisitions) == 2 and acquisitions[0] == series
    assert (acquisitions[1] - acquisitions[0]).total_seconds() == 180
    info = first.RadiopharmaceuticalInformationSequence[0]
    assert len(info.RadiopharmaceuticalStartDateTime) == 14
    assert "GEMS_PETD_01" not in [elem.value for elem in first.group_dataset(0x0009)]


@pytest.mark.parametrize("position", ["HFS", "FFP"])
def test_ge_series_time_after_acquisition_and_private_scan_start(written, position) -> None:
    slices = _pet_slices(written[("ge", position)])
    first = slices[0]
    assert first.Units == "BQML"
    series = _dt(first.SeriesDate, first.SeriesTime)
    earliest = min(_dt(ds.AcquisitionDate, ds.AcquisitionTime) for ds in slices)
    assert series > earliest
    assert (series - earliest).total_seconds() == 3600
    for ds in slices:
        element = ds[0x0009, 0x100D]
        assert ds[0x0009, 0x0010].value == "GEMS_PETD_01" and element.VR == "DT"
        assert datetime.strptime(element.value, "%Y%m%d%H%M%S") == earliest
    info = first.RadiopharmaceuticalInformationSequence[0]
    assert "RadiopharmaceuticalStartDateTime" not in info and "RadiopharmaceuticalStartTime" in info
    # the series time would overstate the uptake by an hour (SUV 46 % too high)
    naive = (series - _scan_and_injection(slices)[1]).total_seconds()
    assert naive == PET_UPTAKE_S + 3600


def test_philips_counts_and_both_private_factors(written) -> None:
    slices = _pet_slices(written[("philips", "HFS")])
    first = slices[0]
    assert first.Units == "CNTS" and "RescaleType" not in first
    block = first.private_block(0x7053, "Philips PET Private Group")
    suv_factor = float(block[0x00].value)
    bq_ml_factor = float(block[0x09].value)
    assert block[0x00].VR == block[0x09].VR == "DS"
    assert bq_ml_factor == 1.8 and suv_factor != 1.0
    # both factors agree with the BQML arithmetic from the headers' dose, weight and times
    assert suv_factor == pytest.approx(bq_ml_factor * float(first.PatientWeight) * 1000 / _decayed_dose_bq(slices))
    assert "RadiopharmaceuticalStartDateTime" in first.RadiopharmaceuticalInformationSequence[0]
    for ds in slices:
        other = ds.private_block(0x7053, "Philips PET Private Group")
        assert (float(other[0x00].value), float(other[0x09].value)) == (suv_factor, bq_ml_factor)


def test_no_pet_without_the_option(tmp_path: Path) -> None:
    patient = write_patient(tmp_path, 0, SynthOptions(rows=16, slices=6))
    course = patient.courses[0]
    assert not (course.folder / "PT").exists()
    assert not any(f.modality == "PT" for f in course.files)
    assert (course.pet_series_uid, course.pet_vendor, course.pet_decayed_dose_bq) == ("", "", 0.0)


def test_cycle_picks_the_vendor_by_patient_index_and_is_deterministic(tmp_path: Path) -> None:
    opts = SynthOptions(rows=16, slices=6, pet="cycle", second_course=True)
    patients = write_cohort(tmp_path / "a", 4, opts)
    assert [[c.pet_vendor for c in p.courses] for p in patients] == [
        ["siemens"] * 2,
        ["ge"] * 2,
        ["philips"] * 2,
        ["siemens"] * 2,
    ]
    units = [pydicom.dcmread(next(f.path for f in p.courses[0].files if f.modality == "PT")).Units for p in patients]
    assert units == ["BQML", "BQML", "CNTS", "BQML"]
    second = patients[0].courses[1]
    assert second.pet_series_uid != patients[0].courses[0].pet_series_uid
    assert pydicom.dcmread(next(f.path for f in second.files if f.modality == "PT")).FrameOfReferenceUID == (
        second.frame_of_reference_uid
    )
    again = write_patient(tmp_path / "b", 1, opts)
    pt = [f for f in patients[1].courses[0].files if f.modality == "PT"]
    pt_again = [f for f in again.courses[0].files if f.modality == "PT"]
    assert [f.path.read_bytes() for f in pt] == [f.path.read_bytes() for f in pt_again]


def test_cli_pet_flag() -> None:
    parser = argparse.ArgumentParser()
    add_cli_arguments(parser)
    assert options_from_args(parser.parse_args(["--out", "x", "--pet"])).pet == "cycle"
    assert options_from_args(parser.parse_args(["--out", "x", "--pet", "ge"])).pet == "ge"
    assert options_from_args(parser.parse_args(["--out", "x"])).pet == ""
    assert options_from_args(parser.parse_args(["--out", "x", "--pet", "philips", "--mr"])).pet == "philips"
    with pytest.raises(SystemExit):
        parser.parse_args(["--out", "x", "--pet", "toshiba"])


def test_options_reject_an_unknown_vendor() -> None:
    with pytest.raises(ValueError, match="pet"):
        SynthOptions(pet="toshiba")
