"""SUV scale factors: every branch of the QIBA pseudo-code with hand-computed numbers, and each
bad input refused with the tag named.

Common numbers: weight 75 kg, injected 370 MBq of F-18 at 08:59:30, series at 10:00:00 on
2026-01-05, so 60 min 30 s = 3630 s from start to scan. F-18 half-life 109.77 min = 6586.2 s
(NNDC/ENSDF; the value scanners write in RadionuclideHalfLife).
"""

import json

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import CTImageStorage, PositronEmissionTomographyImageStorage, generate_uid

from rt_resources.pet.suv import SUVError, pet_scale

F18_HALF_LIFE_S = 6586.2
WEIGHT_KG = 75.0
DOSE_BQ = 370e6
REL = 1e-9

# 370e6 * 2**(-3630/6586.2) = 370e6 * 0.68241... = 252.49 MBq at 10:00:00
DECAYED_3630 = 370e6 * 2 ** (-3630 / 6586.2)
# SUVbw per Bq/ml: 75 kg * 1000 g/kg / decayed dose = 2.970e-4 g/Bq
FACTOR_3630 = 75_000 / DECAYED_3630

SERIES_UID = generate_uid()


def pet(
    index: int = 0,
    *,
    acquisition_time: str = "100000",
    units: str = "BQML",
    slope: str = "1.0",
    intercept: str = "0",
) -> Dataset:
    """One PET slice header, Siemens-style (BQML, series time = first acquisition time)."""
    ds = Dataset()
    ds.SOPClassUID = PositronEmissionTomographyImageStorage
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.99.{index + 1}"
    ds.SeriesInstanceUID = SERIES_UID
    ds.Modality = "PT"
    ds.Units = units
    ds.CorrectedImage = ["DECY", "ATTN", "SCAT", "DTIM"]
    ds.DecayCorrection = "START"
    ds.SeriesDate = "20260105"
    ds.SeriesTime = "100000"
    ds.AcquisitionDate = "20260105"
    ds.AcquisitionTime = acquisition_time
    ds.PatientWeight = "75"
    ds.RescaleSlope = slope
    ds.RescaleIntercept = intercept
    drug = Dataset()
    drug.RadiopharmaceuticalStartDateTime = "20260105085930"
    drug.RadiopharmaceuticalStartTime = "085930"
    drug.RadionuclideTotalDose = "370000000"
    drug.RadionuclideHalfLife = "6586.2"
    ds.RadiopharmaceuticalInformationSequence = Sequence([drug])
    return ds


def series(n: int = 3, **kwargs) -> list[Dataset]:
    """A multi-bed series: beds start 4 min apart (acquisition times differ, as they do)."""
    times = ["100000", "100400", "100800", "101200"]
    return [pet(i, acquisition_time=times[i], **kwargs) for i in range(n)]


def drug(ds: Dataset) -> Dataset:
    return ds.RadiopharmaceuticalInformationSequence[0]


def philips(ds: Dataset, suv_scale: str | None, activity_scale: str | None) -> None:
    block = ds.private_block(0x7053, "Philips PET Private Group", create=True)
    if suv_scale is not None:
        block.add_new(0x00, "DS", suv_scale)  # (7053,1000) SUV Scale Factor
    if activity_scale is not None:
        block.add_new(0x09, "DS", activity_scale)  # (7053,1009) Activity Concentration Scale Factor


def ge_post_processed(datasets: list[Dataset], ge_scan: str | None) -> None:
    """A GE series re-created at 10:30 (series time after every acquisition time)."""
    for ds in datasets:
        ds.SeriesTime = "103000"
        if ge_scan is not None:
            ds.private_block(0x0009, "GEMS_PETD_01", create=True).add_new(0x0D, "DT", ge_scan)


# ---------------------------------------------------------------------------------------------
# branches


def test_bqml_siemens_style():
    datasets = series(3)
    scale = pet_scale(datasets)
    assert scale.has_suv and scale.has_bqml
    assert scale.suv_bw_reason == "" and scale.bqml_reason == ""
    assert scale.units == "BQML"
    assert [s.sop_instance_uid for s in scale.slices] == [ds.SOPInstanceUID for ds in datasets]
    for s in scale.slices:
        assert s.bqml_factor == 1.0
        assert s.suv_bw_factor == pytest.approx(FACTOR_3630, rel=REL)
    assert scale.inputs["decay_s"] == 3630.0
    assert scale.inputs["weight_kg"] == WEIGHT_KG
    assert scale.inputs["injected_dose_bq"] == DOSE_BQ
    assert scale.inputs["half_life_s"] == F18_HALF_LIFE_S
    assert scale.inputs["decayed_dose_bq"] == pytest.approx(DECAYED_3630, rel=REL)
    assert scale.inputs["scan_datetime"] == "2026-01-05T10:00:00"
    assert scale.inputs["start_datetime"] == "2026-01-05T08:59:30"
    assert scale.branch[0] == "Units BQML"
    assert "scan time: SeriesDate/Time (not after AcquisitionDate/Time)" in scale.branch
    assert "start: RadiopharmaceuticalStartDateTime" in scale.branch
    assert any(b.startswith("decay: START") for b in scale.branch)
    record = json.loads(json.dumps(scale.to_json()))
    assert record["has_suv"] is True
    assert record["slices"][1]["suv_bw_factor"] == pytest.approx(FACTOR_3630, rel=REL)


def test_ge_post_processed_uses_private_scan_datetime():
    datasets = series(2)
    ge_post_processed(datasets, "20260105100100")  # GE scan DateTime 10:01:00
    scale = pet_scale(datasets)
    # start 08:59:30 -> scan 10:01:00 = 3690 s; 75000 / (370e6 * 2**(-3690/6586.2))
    expected = 75_000 / (370e6 * 2 ** (-3690 / 6586.2))
    assert scale.inputs["decay_s"] == 3690.0
    assert scale.inputs["ge_scan_datetime"] == "2026-01-05T10:01:00"
    assert all(s.suv_bw_factor == pytest.approx(expected, rel=REL) for s in scale.slices)
    assert any(b.startswith("scan time: GE private scan DateTime (0009,100D)") for b in scale.branch)


def test_ge_post_processed_without_private_uses_earliest_acquisition():
    datasets = series(3)[::-1]  # beds in reverse order: the earliest is not the first dataset
    ge_post_processed(datasets, None)
    scale = pet_scale(datasets)
    # earliest acquisition 10:00:00: 3630 s as in the common case
    assert scale.inputs["scan_datetime"] == "2026-01-05T10:00:00"
    assert all(s.suv_bw_factor == pytest.approx(FACTOR_3630, rel=REL) for s in scale.slices)
    assert any(b.startswith("scan time: earliest AcquisitionDate/Time") for b in scale.branch)


def test_philips_cnts_suv_scale_factor():
    datasets = series(2, units="CNTS")
    philips(datasets[0], "0.000123", "0.8")
    philips(datasets[1], "0.000125", "0.8")
    scale = pet_scale(datasets)
    assert scale.has_suv and scale.has_bqml
    # SUVbw = (stored * slope + intercept) * (7053,1000), per slice
    assert [s.suv_bw_factor for s in scale.slices] == [0.000123, 0.000125]
    assert [s.bqml_factor for s in scale.slices] == [0.8, 0.8]
    assert any("Philips SUV Scale Factor (7053,1000)" in b for b in scale.branch)
    assert "decay_s" not in scale.inputs  # the private factor needs no decay


def test_philips_cnts_activity_concentration_only_goes_through_bqml():
    datasets = series(2, units="CNTS")
    for ds in datasets:
        philips(ds, None, "0.8")
    scale = pet_scale(datasets)
    # Bq/ml = value * 0.8; SUVbw = value * 0.8 * 75000 / (370e6 * 2**(-3630/6586.2))
    assert all(s.bqml_factor == 0.8 for s in scale.slices)
    assert all(s.suv_bw_factor == pytest.approx(0.8 * FACTOR_3630, rel=REL) for s in scale.slices)
    assert any("then as BQML" in b for b in scale.branch)


def test_philips_plain_tag_accepted_when_private_creator_is_missing():
    ds = pet(units="CNTS")
    ds.add_new(0x70531000, "DS", "0.000123")  # no (7053,0010) creator at all
    scale = pet_scale([ds])
    assert scale.slices[0].suv_bw_factor == 0.000123
    assert any("plain tag (7053,1000)" in b for b in scale.branch)


def test_philips_tag_under_another_private_creator_is_not_read():
    ds = pet(units="CNTS")
    ds.private_block(0x7053, "SOMEONE ELSE", create=True).add_new(0x00, "DS", "0.000123")
    scale = pet_scale([ds])
    assert not scale.has_suv and not scale.has_bqml
    assert "(7053,1000)" in scale.suv_bw_reason and "(7053,1009)" in scale.suv_bw_reason


def test_gml_is_suv_already():
    scale = pet_scale(series(2, units="GML"))
    assert all(s.suv_bw_factor == 1.0 and s.bqml_factor is None for s in scale.slices)
    assert scale.has_suv and not scale.has_bqml
    assert "GML" in scale.bqml_reason


def test_start_time_only_same_day():
    datasets = series(2)
    for ds in datasets:
        del drug(ds).RadiopharmaceuticalStartDateTime  # 08:59:30 on the scan date
    scale = pet_scale(datasets)
    assert scale.inputs["decay_s"] == 3630.0
    assert all(s.suv_bw_factor == pytest.approx(FACTOR_3630, rel=REL) for s in scale.slices)
    assert "start: RadiopharmaceuticalStartTime on the scan date" in scale.branch


def test_start_time_only_across_midnight():
    ds = pet(acquisition_time="004500")
    ds.SeriesDate = ds.AcquisitionDate = "20260106"  # day 2
    ds.SeriesTime = "004500"
    del drug(ds).RadiopharmaceuticalStartDateTime
    drug(ds).RadiopharmaceuticalStartTime = "234000"  # 23:40 on day 1
    scale = pet_scale([ds])
    # 23:40 day 1 -> 00:45 day 2 = 20 min + 45 min = 3900 s
    expected = 75_000 / (370e6 * 2 ** (-3900 / 6586.2))
    assert scale.inputs["start_datetime"] == "2026-01-05T23:40:00"
    assert scale.inputs["decay_s"] == 3900.0
    assert scale.slices[0].suv_bw_factor == pytest.approx(expected, rel=REL)
    assert any(b.startswith("start: RadiopharmaceuticalStartTime on the day before") for b in scale.branch)


def test_decay_correction_admin_needs_no_decay():
    datasets = series(2)
    for ds in datasets:
        ds.DecayCorrection = "ADMIN"
    scale = pet_scale(datasets)
    # decay factor 1: 75000 / 370e6 = 2.027e-4 g/Bq
    assert all(s.suv_bw_factor == pytest.approx(75_000 / 370e6, rel=REL) for s in scale.slices)
    assert scale.inputs["decay_factor"] == 1.0
    assert any(b.startswith("decay: ADMIN") for b in scale.branch)


def test_start_datetime_with_offset_converted_to_the_local_zone():
    ds = pet()
    ds.TimezoneOffsetFromUTC = "+0000"
    drug(ds).RadiopharmaceuticalStartDateTime = "20260105085930+0100"  # 07:59:30 UTC
    scale = pet_scale([ds])
    # 07:59:30 -> 10:00:00 = 7230 s
    assert scale.inputs["decay_s"] == 7230.0
    assert scale.slices[0].suv_bw_factor == pytest.approx(75_000 / (370e6 * 2 ** (-7230 / 6586.2)), rel=REL)


def test_rescale_slope_differs_per_slice():
    datasets = [
        pet(0, slope="0.5"),
        pet(1, slope="2.0", intercept="0"),
        pet(2, acquisition_time="100400"),
    ]
    del datasets[2].RescaleSlope, datasets[2].RescaleIntercept  # missing -> 1 and 0
    scale = pet_scale(datasets)
    assert [(s.rescale_slope, s.rescale_intercept) for s in scale.slices] == [(0.5, 0.0), (2.0, 0.0), (1.0, 0.0)]
    # the factor applies after the rescale, so SUV of stored 1000 is 1000 * slope * factor per slice
    suv = [(1000 * s.rescale_slope + s.rescale_intercept) * s.suv_bw_factor for s in scale.slices]
    assert suv == pytest.approx([500 * FACTOR_3630, 2000 * FACTOR_3630, 1000 * FACTOR_3630], rel=REL)


def test_suv_lbm_male():
    ds = pet()
    ds.PatientSex, ds.PatientSize = "M", "1.80"
    scale = pet_scale([ds])
    # BMI = 75 / 1.80**2 = 23.148; LBM = 9270 * 75 / (6680 + 216 * BMI) = 59.27 kg
    bmi = 75 / 1.80**2
    lbm = 9270 * 75 / (6680 + 216 * bmi)
    assert scale.inputs["lbm_kg"] == pytest.approx(lbm, rel=REL)
    assert scale.suv_lbm_factors == pytest.approx([FACTOR_3630 * lbm / 75], rel=REL)
    assert scale.suv_lbm_reason == ""


def test_suv_lbm_female():
    ds = pet()
    ds.PatientSex, ds.PatientSize, ds.PatientWeight = "F", "1.65", "60"
    scale = pet_scale([ds])
    # BMI = 60 / 1.65**2 = 22.039; LBM = 9270 * 60 / (8780 + 244 * BMI) = 40.57 kg
    bmi = 60 / 1.65**2
    lbm = 9270 * 60 / (8780 + 244 * bmi)
    suv_bw = 60_000 / DECAYED_3630
    assert scale.slices[0].suv_bw_factor == pytest.approx(suv_bw, rel=REL)
    assert scale.suv_lbm_factors == pytest.approx([suv_bw * lbm / 60], rel=REL)


@pytest.mark.parametrize(
    ("sex", "size", "tag"),
    [("O", "1.80", "PatientSex (0010,0040)"), ("M", None, "PatientSize (0010,1020)"), ("M", "180", "centimetres")],
)
def test_suv_lbm_not_computable(sex, size, tag):
    ds = pet()
    ds.PatientSex = sex
    if size is not None:
        ds.PatientSize = size
    scale = pet_scale([ds])
    assert scale.has_suv
    assert scale.suv_lbm_factors is None
    assert tag in scale.suv_lbm_reason


# ---------------------------------------------------------------------------------------------
# bad input: no SUV (and maybe no Bq/ml), with the tag named


@pytest.mark.parametrize("weight", [None, "0"])
def test_patient_weight_missing_or_zero(weight):
    datasets = series(2)
    for ds in datasets:
        if weight is None:
            del ds.PatientWeight
        else:
            ds.PatientWeight = weight
    scale = pet_scale(datasets)
    assert not scale.has_suv
    assert "PatientWeight (0010,1030)" in scale.suv_bw_reason
    assert all(s.suv_bw_factor is None for s in scale.slices)
    assert scale.has_bqml and all(s.bqml_factor == 1.0 for s in scale.slices)
    assert scale.suv_lbm_factors is None


def test_total_dose_missing():
    ds = pet()
    del drug(ds).RadionuclideTotalDose
    scale = pet_scale([ds])
    assert not scale.has_suv and scale.has_bqml
    assert "RadionuclideTotalDose (0018,1074)" in scale.suv_bw_reason


def test_half_life_missing():
    ds = pet()
    del drug(ds).RadionuclideHalfLife
    scale = pet_scale([ds])
    assert not scale.has_suv and scale.has_bqml
    assert "RadionuclideHalfLife (0018,1075)" in scale.suv_bw_reason


def test_all_missing_inputs_are_named_at_once():
    ds = pet()
    del ds.PatientWeight, drug(ds).RadionuclideTotalDose
    reason = pet_scale([ds]).suv_bw_reason
    assert "PatientWeight (0010,1030)" in reason and "RadionuclideTotalDose (0018,1074)" in reason


def test_decay_correction_none():
    datasets = series(2)
    for ds in datasets:
        ds.DecayCorrection = "NONE"
    scale = pet_scale(datasets)
    assert not scale.has_suv
    assert "DecayCorrection (0054,1102)" in scale.suv_bw_reason and "NONE" in scale.suv_bw_reason
    assert scale.has_bqml  # still activity concentrations, at each bed's own time


def test_unsupported_units():
    scale = pet_scale(series(2, units="PROPCNTS"))
    assert not scale.has_suv and not scale.has_bqml
    assert "Units (0054,1001)" in scale.suv_bw_reason and "PROPCNTS" in scale.suv_bw_reason
    assert "Units (0054,1001)" in scale.bqml_reason
    assert all(s.suv_bw_factor is None and s.bqml_factor is None for s in scale.slices)


def test_philips_cnts_without_private_factors():
    scale = pet_scale(series(2, units="CNTS"))
    assert not scale.has_suv and not scale.has_bqml
    assert "(7053,1000)" in scale.suv_bw_reason and "(7053,1009)" in scale.bqml_reason


def test_corrected_image_without_attn():
    ds = pet()
    ds.CorrectedImage = ["DECY", "SCAT"]
    scale = pet_scale([ds])
    assert not scale.has_suv and not scale.has_bqml
    assert "CorrectedImage (0028,0051)" in scale.suv_bw_reason and "ATTN" in scale.suv_bw_reason
    assert "ATTN" in scale.bqml_reason


def test_corrected_image_without_decy():
    ds = pet()
    ds.CorrectedImage = "ATTN"
    scale = pet_scale([ds])
    assert not scale.has_suv and scale.has_bqml
    assert "CorrectedImage (0028,0051)" in scale.suv_bw_reason and "DECY" in scale.suv_bw_reason


def test_start_datetime_after_scan_time():
    ds = pet()
    drug(ds).RadiopharmaceuticalStartDateTime = "20260105103000"  # 10:30, scan 10:00
    scale = pet_scale([ds])
    assert not scale.has_suv and scale.has_bqml
    assert "RadiopharmaceuticalStartDateTime (0018,1078)" in scale.suv_bw_reason


@pytest.mark.filterwarnings("ignore:Invalid value for VR TM")
def test_unparseable_series_time():
    ds = pet()
    ds.SeriesTime = "99xx"
    scale = pet_scale([ds])
    assert not scale.has_suv
    assert "SeriesTime (0008,0031)" in scale.suv_bw_reason


def test_series_level_value_differing_between_slices():
    datasets = series(2)
    datasets[1].PatientWeight = "80"
    scale = pet_scale(datasets, path_of=lambda ds: f"PT_{ds.SOPInstanceUID[-1]}.dcm")
    assert not scale.has_suv
    assert "PatientWeight (0010,1030) differs" in scale.suv_bw_reason and "PT_2.dcm" in scale.suv_bw_reason


# ---------------------------------------------------------------------------------------------
# unusable input: SUVError


def test_no_datasets():
    with pytest.raises(SUVError, match="no datasets"):
        pet_scale([])


def test_not_pet_names_the_file():
    ct = pet()
    ct.SOPClassUID, ct.Modality = CTImageStorage, "CT"
    with pytest.raises(SUVError, match=r"CT_1\.dcm: SOP Class .* is not PET Image Storage"):
        pet_scale([pet(), ct], path_of=lambda ds: "CT_1.dcm")


def test_more_than_one_series():
    other = pet(1)
    other.SeriesInstanceUID = generate_uid()
    with pytest.raises(SUVError, match="SeriesInstanceUIDs"):
        pet_scale([pet(0), other])


def test_unreadable_rescale_slope():
    ds = pet()
    # as read from a file whose DS value pydicom cannot convert
    ds[0x00281053] = RawDataElement(Tag(0x00281053), "DS", 3, b"abc", 0, True, True)
    with pytest.raises(SUVError, match=r"RescaleSlope \(0028,1053\) .*abc"):
        pet_scale([ds])


def test_reads_a_written_file(tmp_path):
    """The private elements survive a write/read round trip (explicit VR little endian)."""
    ds = pet(units="CNTS")
    philips(ds, "0.000123", "0.8")
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    path = tmp_path / "PT_1.dcm"
    ds.save_as(path, enforce_file_format=True)
    scale = pet_scale([pydicom.dcmread(path)])
    assert scale.slices[0].suv_bw_factor == 0.000123 and scale.slices[0].bqml_factor == 0.8


# Found in review: headers that once gave an SUV tens to thousands of times too high, silently.


@pytest.mark.parametrize("value", ["20260105", "2026010"])
def test_start_datetime_without_a_time_of_day_falls_back_to_the_start_time(value):
    # "20260105" is a legal DT read as midnight (decay 36000 s, SUV x44); "2026010" pydicom reads leniently
    ds = pet()
    drug(ds).RadiopharmaceuticalStartDateTime = value  # StartTime 08:59:30 is still there
    scale = pet_scale([ds])
    assert scale.inputs["decay_s"] == 3630.0
    assert scale.slices[0].suv_bw_factor == pytest.approx(FACTOR_3630, rel=REL)
    assert any("RadiopharmaceuticalStartTime on the scan date" in b and "no time of day" in b for b in scale.branch)


def test_start_datetime_without_a_time_of_day_and_no_start_time():
    ds = pet()
    drug(ds).RadiopharmaceuticalStartDateTime = "20260105"
    del drug(ds).RadiopharmaceuticalStartTime
    scale = pet_scale([ds])
    assert not scale.has_suv and "no time of day" in scale.suv_bw_reason


def test_start_time_seconds_after_the_scan_is_clock_skew_not_the_day_before():
    # start 10:00:30, series 10:00:00: "the day before" would be 86370 s of decay, an SUV x8900
    ds = pet()
    del drug(ds).RadiopharmaceuticalStartDateTime
    drug(ds).RadiopharmaceuticalStartTime = "100030"
    scale = pet_scale([ds])
    assert not scale.has_suv and scale.has_bqml
    assert "RadiopharmaceuticalStartTime (0018,1072)" in scale.suv_bw_reason and "clock" in scale.suv_bw_reason


def test_acquisition_time_without_acquisition_date_still_checks_the_series_time():
    # a post-processed series (SeriesTime 11:00) whose slices have AcquisitionTime 10:00-10:04 and no
    # AcquisitionDate: the scan time is the earliest acquisition on the series date (3630 s), not 11:00 (7230 s)
    datasets = series(2)
    for ds in datasets:
        ds.SeriesTime = "110000"
        del ds.AcquisitionDate
    scale = pet_scale(datasets)
    assert scale.inputs["decay_s"] == 3630.0
    assert scale.slices[0].suv_bw_factor == pytest.approx(FACTOR_3630, rel=REL)
    assert any(b.startswith("scan time: earliest AcquisitionDate/Time") for b in scale.branch)


def test_uptake_beyond_five_half_lives_is_refused():
    ds = pet()
    drug(ds).RadiopharmaceuticalStartDateTime = "20260104085930"  # a day early: 90030 s
    scale = pet_scale([ds])
    assert not scale.has_suv and "half-lives" in scale.suv_bw_reason


def test_total_dose_in_mbq_is_refused():
    ds = pet()
    drug(ds).RadionuclideTotalDose = "370"  # MBq written in a Bq tag: SUV x1e6
    scale = pet_scale([ds])
    assert not scale.has_suv and "RadionuclideTotalDose (0018,1074)" in scale.suv_bw_reason
    assert "MBq" in scale.suv_bw_reason


def test_weight_in_grams_is_refused():
    ds = pet()
    ds.PatientWeight = "75000"
    scale = pet_scale([ds])
    assert not scale.has_suv and "PatientWeight (0010,1030)" in scale.suv_bw_reason and "grams" in scale.suv_bw_reason
