"""PET in the course: a synthetic PET/CT of each vendor's headers in SUVbw, SUV metrics against the
analytic phantom, PET radiomics, and every bad input ending with its reason in the ledger or the
pet_suv check, nothing written as SUV that is not SUV."""

import dataclasses
import json
import math

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from dagster import AssetCheckKey, AssetKey, materialize

from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.pet_images import pet_images
from rt_assets.assets.course.pet_metrics import pet_metrics
from rt_assets.assets.course.radiomics import radiomics
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.synthetic import PET_LESION_SUV, course_context, pet_lesion, write_patient
from tests.helpers import SMALL

COURSE = [course_manifest, ct_image, structure_masks, pet_images, pet_metrics, radiomics]
#: big enough that the lesion (PTV radius + 8 mm = 33 mm) is well resolved on the PET grid (4 mm x
#: 4 mm x 1.8 mm: about 5,200 voxels), and the CT covers it in z
PET_COURSE = dataclasses.replace(SMALL, rows=64, pixel_mm=5.0, slices=40, slice_mm=3.0)


def add(instance, drop, data_root):
    keys = sorted(c.key for c in survey_drop(drop, data_root).courses)
    instance.add_dynamic_partitions(course_partitions.name, keys)
    return keys


@pytest.mark.parametrize("vendor", ["siemens", "ge", "philips"])
def test_pet_ct_in_suv_with_metrics_and_radiomics(vendor, drop, data_root, resources, instance):
    opts = dataclasses.replace(PET_COURSE, pet=vendor)
    synth = write_patient(drop, 0, opts).courses[0]
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    pet_dir = data_root / "courses" / key / "pet" / "pet1"
    info = json.loads((pet_dir / "info.json").read_text())
    assert info["series_uid"] == synth.pet_series_uid and info["has_suv"], info
    assert info["registration"] == "same frame of reference as the CT"
    suv = sitk.ReadImage(str(pet_dir / "suv_bw.nii.gz"))
    ct = sitk.ReadImage(str(data_root / "courses" / key / "ct.nii.gz"))
    assert suv.GetSpacing() != ct.GetSpacing()  # its own grid
    assert sitk.ReadImage(str(pet_dir / "suv_bw_on_ct.nii.gz")).GetSize() == ct.GetSize()
    assert float(sitk.GetArrayViewFromImage(suv).max()) == pytest.approx(PET_LESION_SUV, rel=1e-3)
    # the decayed dose the reader derived equals the generator's (Philips: the private SUV factor)
    if vendor != "philips":
        assert info["scale"]["inputs"]["decayed_dose_bq"] == pytest.approx(synth.pet_decayed_dose_bq, rel=1e-9)

    table = pd.read_parquet(data_root / "courses" / key / "pet_metrics.parquet")
    ptv = table[(table["roi_name"] == "PTV") & (table["source"] == "manual")].iloc[0]
    # the PTV lies inside the uniform lesion: SUVmax, SUVmean and SUVpeak are the lesion's SUV
    for column in ("suv_max", "suv_mean", "suv_peak"):
        assert ptv[column] == pytest.approx(PET_LESION_SUV, rel=0.01), column
    body = table[table["roi_name"] == "BODY"].iloc[0]
    sphere_cc = 4.0 / 3.0 * math.pi * pet_lesion(course_context(drop, 0, opts).phantom).semi_axes[0] ** 3 / 1000.0
    # every other tissue is below 40 % of SUVmax and below SUV 2.5: the MTVs in BODY are the lesion
    assert body["mtv40_cc"] == pytest.approx(sphere_cc, rel=0.03)
    assert body["mtv25_cc"] == pytest.approx(body["mtv40_cc"], rel=1e-9)
    assert body["tlg40"] == pytest.approx(PET_LESION_SUV * body["mtv40_cc"], rel=1e-3)
    assert ptv["in_view_fraction"] == 1.0  # the PET covers the PTV
    # SUVlbm (Janmahasatian) from the synthetic patient's height and sex
    assert 0.5 < ptv["suvlbm_max"] / ptv["suv_max"] < 1.0

    features = pd.read_parquet(data_root / "courses" / key / "radiomics.parquet")
    pet_rows = features[features["source"] == "pet1/manual"]
    assert "PTV" in set(pet_rows["roi_name"])
    row = pet_rows[pet_rows["roi_name"] == "PTV"].iloc[0]
    assert row["original_firstorder_Maximum"] == pytest.approx(PET_LESION_SUV, rel=0.01)  # SUV, not normalised
    check = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(AssetKey("pet_images"), "pet_suv"))
    assert check.event.dagster_event.event_specific_data.passed
    mat = instance.fetch_materializations(AssetKey("pet_images"), limit=1).records[0].asset_materialization
    (series,) = mat.metadata["series"].value
    assert series["branch"] and series["suv_bw_factor"] > 0
    assert (data_root / "courses" / key / "preview" / "pet1_fusion.png").stat().st_size > 10_000


def _mutate(files, change):
    for path in files:
        ds = pydicom.dcmread(path)
        change(ds)
        ds.save_as(path)


def _radiopharm(ds):
    return ds.RadiopharmaceuticalInformationSequence[0]


#: bad input -> (what to change in every PET file, written as activity only (True) or refused, words of the reason)
BAD = {
    "no_weight": (lambda ds: delattr(ds, "PatientWeight"), True, "PatientWeight (0010,1030)"),
    "zero_weight": (lambda ds: setattr(ds, "PatientWeight", "0"), True, "PatientWeight (0010,1030)"),
    "no_total_dose": (lambda ds: delattr(_radiopharm(ds), "RadionuclideTotalDose"), True, "RadionuclideTotalDose"),
    "no_half_life": (lambda ds: delattr(_radiopharm(ds), "RadionuclideHalfLife"), True, "RadionuclideHalfLife"),
    "decay_none": (lambda ds: setattr(ds, "DecayCorrection", "NONE"), True, "DecayCorrection"),
    "units_unknown": (lambda ds: setattr(ds, "Units", "PROPCNTS"), False, "PROPCNTS"),
    "no_attenuation_correction": (lambda ds: setattr(ds, "CorrectedImage", ["DECY", "NORM"]), False, "ATTN"),
    "start_after_scan": (
        lambda ds: setattr(_radiopharm(ds), "RadiopharmaceuticalStartDateTime", "20991231235959"),
        True,
        "after",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_pet_input_is_refused_with_its_reason(case, drop, data_root, resources, instance):
    change, activity_only, words = BAD[case]
    synth = write_patient(drop, 0, dataclasses.replace(SMALL, pet="siemens")).courses[0]
    _mutate([f.path for f in synth.files if f.modality == "PT"], change)
    (key,) = add(instance, drop, data_root)
    pet_only = COURSE[:-1]  # radiomics on the PET is covered above; here the SUV decision is the point
    assert materialize(pet_only, partition_key=key, instance=instance, resources=resources).success  # goes on
    course_dir = data_root / "courses" / key
    written = sorted(p.name for p in (course_dir / "pet").rglob("*.nii.gz"))
    assert "suv_bw.nii.gz" not in written and "suv_bw_on_ct.nii.gz" not in written  # nothing written as SUV
    check = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(AssetKey("pet_images"), "pet_suv"))
    data = check.event.dagster_event.event_specific_data
    assert not data.passed and words in data.description, data.description
    refused = json.loads((course_dir / "refused" / "pet_images.json").read_text())
    if activity_only:
        assert written == ["activity_bqml.nii.gz"] and refused == []
    else:
        assert written == [] and refused and all(words in r["reason"] for r in refused), refused
    assert pd.read_parquet(course_dir / "pet_metrics.parquet").empty
    assert not (course_dir / "pet" / "pet1" / "masks").exists()  # so PET radiomics has nothing to read


def test_pet_on_no_course_frame_of_reference_is_in_the_ledger(drop, data_root):
    synth = write_patient(drop, 0, dataclasses.replace(SMALL, pet="ge")).courses[0]
    pet_files = [f.path for f in synth.files if f.modality == "PT"]
    _mutate(pet_files, lambda ds: setattr(ds, "FrameOfReferenceUID", "1.2.826.0.1.3680043.8.498.999"))
    survey = survey_drop(drop, data_root)
    (course,) = survey.courses
    assert not course.files_of("PT")
    rejected = {r.path: r.reason for r in survey.links.rejections}
    assert len(rejected) == len(pet_files)
    assert all("frame of reference" in reason and "REG" in reason for reason in rejected.values())


def test_pet_registered_by_a_reg_joins_through_it(drop, data_root, resources, instance):
    """A PET in another frame of reference (here the MR's, which the course's REG registers to the
    CT) joins the course through the REG, and its CT -> PET matrix is the REG's."""
    synth = write_patient(drop, 0, dataclasses.replace(SMALL, pet="siemens", mr=True)).courses[0]
    pet_files = [f.path for f in synth.files if f.modality == "PT"]
    _mutate(pet_files, lambda ds: setattr(ds, "FrameOfReferenceUID", synth.mr_frame_of_reference_uid))
    (key,) = add(instance, drop, data_root)
    pet_only = [course_manifest, ct_image, structure_masks, pet_images]
    assert materialize(pet_only, partition_key=key, instance=instance, resources=resources).success
    info = json.loads((data_root / "courses" / key / "pet" / "pet1" / "info.json").read_text())
    assert info["registration"] == f"REG {synth.reg_uid}" and info["has_suv"]
    np.testing.assert_allclose(np.array(info["ct_to_pet"]), np.array(synth.mr_from_ct).reshape(4, 4), atol=1e-6)
