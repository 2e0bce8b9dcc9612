"""Cohort science on a real instance: standard names in the cohort tables, EQD2 per treatment
phase against a hand computation, a plan-sum course that gets no EQD2 and says why, and the
auto-vs-manual agreement of masks shifted by a known distance."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from dagster import AssetKey, materialize

from rt_assets.assets.cohort.cohort_agreement import cohort_agreement
from rt_assets.assets.cohort.cohort_dvh_metrics import cohort_dvh_metrics
from rt_assets.assets.cohort.cohort_radiomics import cohort_radiomics
from rt_assets.assets.cohort.cohort_unmapped_rois import cohort_unmapped_rois
from rt_assets.assets.course.contour_agreement import contour_agreement
from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.dose_grid import dose_grid
from rt_assets.assets.course.dvh import dvh
from rt_assets.assets.course.dvh_eqd2 import dvh_eqd2
from rt_assets.assets.course.radiomics import radiomics
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.resources import ScienceConfig
from rt_resources.synthetic.analytic import write_analytic_course
from tests.helpers import add_uniform_plan_and_dose, copy_shared

COURSE = [course_manifest, ct_image, dose_grid, structure_masks, dvh, dvh_eqd2, contour_agreement]
#: primary 25 x 2 Gy and boost 8 x 2.5 Gy on the analytic uniform phantom (50 Gy x scale)
PHASES = ((1.0, 25), (0.4, 8))
#: a small analytic CT (3 mm voxels) that still holds every ROI of the analytic case
GRID = {"rows": 64, "slices": 30, "ct_pixel_mm": 3.0, "ct_slice_mm": 3.0}
#: the site mapping of the analytic course's box: a structure with its own alpha/beta
SITE_NAMES = "synonyms:\n  SpinalCord: [Box]\n  Bladder: [Sphere]\n"


def add(instance, drop, data_root) -> list[str]:
    keys = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, keys)
    return keys


def eqd2_hand(alpha_beta: float) -> float:
    """Sum over the phases of D (d + a/b) / (2 + a/b), by hand for the uniform dose."""
    total = 0.0
    for scale, n in PHASES:
        dose = 50.0 * scale
        total += dose * (dose / n + alpha_beta) / (2.0 + alpha_beta)
    return total


@pytest.fixture
def site_resources(resources, tmp_path):
    names = tmp_path / "site_names.yaml"
    names.write_text(SITE_NAMES)
    return {**resources, "science": ScienceConfig(roi_names=str(names))}


def test_eqd2_per_phase_equals_the_hand_computation(drop, data_root, site_resources, instance):
    write_analytic_course(drop / "uniform", "uniform", **GRID, phases=PHASES)
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=site_resources).success
    course = data_root / "courses" / key
    info = json.loads((course / "dose.json").read_text())
    assert [p["fractions"] for p in info["phases"]] == [25, 8]
    assert len(list((course / "dose_phases").glob("phase-*.nii.gz"))) == 2

    table = pd.read_parquet(course / "dvh_eqd2.parquet").set_index("roi_name")
    box = table.loc["Box"]  # SpinalCord by the site mapping: alpha/beta 2 Gy
    assert box["roi_std"] == "SpinalCord" and box["alpha_beta_gy"] == 2.0 and box["fractions"] == "25+8"
    for column in ("mean_eqd2_gy", "d2_eqd2_gy", "d50_eqd2_gy", "d95_eqd2_gy", "d98_eqd2_gy"):
        assert box[column] == pytest.approx(eqd2_hand(2.0), rel=1e-3), column  # 72.5 Gy
    cylinder = table.loc["Cylinder"]  # unmapped: late normal tissue, 3 Gy
    assert cylinder["alpha_beta_gy"] == 3.0
    assert cylinder["mean_eqd2_gy"] == pytest.approx(eqd2_hand(3.0), rel=1e-3)  # 72 Gy
    physical = pd.read_parquet(course / "dvh_metrics.parquet").set_index("roi_name")
    assert physical.loc["Box", "mean_gy"] == pytest.approx(70.0, rel=1e-3)  # 50 + 20 Gy physical

    assert materialize([cohort_dvh_metrics], instance=instance, resources=site_resources).success
    cohort = pd.read_parquet(data_root / "cohort" / "dvh_metrics.parquet").set_index("roi_name")
    row = cohort.loc["Box"]
    assert row["roi_std"] == "SpinalCord" and row["mean_gy"] == pytest.approx(70.0, rel=1e-3)
    assert row["mean_eqd2_gy"] == pytest.approx(72.5, rel=1e-3) and row["eqd2_reason"] == ""
    columns = list(cohort.reset_index().columns)
    assert columns.index("roi_std") == columns.index("source") + 1


def test_plan_sum_course_gets_physical_dvh_and_the_reason(drop, data_root, resources, instance):
    course_dir = drop / "plansum"
    written = write_analytic_course(course_dir, "uniform", **GRID)
    dose_path = next(p for p in written.files if p.name == "RTDOSE.dcm")
    ds = pydicom.dcmread(dose_path)
    ds.DoseSummationType = "MULTI_PLAN"
    ds.save_as(dose_path)
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    table = pd.read_parquet(data_root / "courses" / key / "dvh_eqd2.parquet")
    assert table["mean_eqd2_gy"].isna().all()
    assert table["eqd2_reason"].str.contains("MULTI_PLAN dose: its plans' doses cannot be separated").all()
    assert materialize([cohort_dvh_metrics], instance=instance, resources=resources).success
    cohort = pd.read_parquet(data_root / "cohort" / "dvh_metrics.parquet").set_index("roi_name")
    assert cohort.loc["Box", "mean_gy"] == pytest.approx(50.0, rel=1e-3)
    assert np.isnan(cohort.loc["Box", "mean_eqd2_gy"]) and "MULTI_PLAN" in cohort.loc["Box", "eqd2_reason"]


def test_plan_without_fractions_withholds_eqd2_naming_the_plan(drop, data_root, resources, instance):
    written = write_analytic_course(drop / "nofx", "uniform", **GRID)
    plan_path = next(p for p in written.files if p.name == "RTPLAN.dcm")
    ds = pydicom.dcmread(plan_path)
    del ds.FractionGroupSequence[0].NumberOfFractionsPlanned
    ds.save_as(plan_path)
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    table = pd.read_parquet(data_root / "courses" / key / "dvh_eqd2.parquet")
    assert table["mean_eqd2_gy"].isna().all()
    assert table["eqd2_reason"].str.contains(f"plan {written.plan_uid}").all()
    mat = instance.fetch_materializations(AssetKey("dvh_eqd2"), limit=1).records[0].asset_materialization
    assert "NumberOfFractionsPlanned" in mat.metadata["eqd2"].value


def test_agreement_of_masks_shifted_by_a_known_distance(drop, data_root, site_resources, instance):
    write_analytic_course(drop / "shift", "uniform", **GRID)
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE[:5], partition_key=key, instance=instance, resources=site_resources).success
    masks = data_root / "courses" / key / "masks"
    manual = sitk.ReadImage(str(masks / "manual" / "Sphere.nii.gz"))
    shift_voxels = 2
    spacing_x = manual.GetSpacing()[0]
    array = sitk.GetArrayFromImage(manual)
    shifted = np.zeros_like(array)
    shifted[:, :, shift_voxels:] = array[:, :, :-shift_voxels]
    auto = sitk.GetImageFromArray(shifted)
    auto.CopyInformation(manual)
    (masks / "totalseg").mkdir()
    sitk.WriteImage(auto, str(masks / "totalseg" / "urinary_bladder.nii.gz"), True)  # Bladder, as the Sphere

    assert materialize([dvh, contour_agreement], partition_key=key, instance=instance, resources=site_resources).success
    table = pd.read_parquet(data_root / "courses" / key / "agreement.parquet")
    (row,) = table.to_dict("records")
    assert row["roi_std"] == "Bladder" and row["roi_name_manual"] == "Sphere"
    assert row["roi_name_auto"] == "urinary_bladder" and row["source_auto"] == "totalseg"
    # the voxelized answer: |A and B| over the shift, exactly; the continuous sphere's within a voxel
    overlap = np.logical_and(array > 0, shifted > 0).sum()
    assert row["dice"] == pytest.approx(2 * overlap / (array.sum() + shifted.sum()), abs=1e-9)
    shift_mm = shift_voxels * spacing_x
    radius = 20.0
    analytic_dice = 1 - 3 * shift_mm / (4 * radius) + shift_mm**3 / (16 * radius**3)  # two shifted spheres
    assert row["dice"] == pytest.approx(analytic_dice, abs=spacing_x / radius)
    assert row["hd_max_mm"] == pytest.approx(shift_mm, abs=spacing_x)
    assert row["hd95_mm"] <= shift_mm + spacing_x and 0 < row["msd_mm"] <= shift_mm
    assert row["volume_ratio"] <= 1.0 and abs(row["mean_gy_diff"]) < 0.1  # uniform dose: same mean
    qc = json.loads((data_root / "courses" / key / "qc.json").read_text())
    (check,) = [r for r in qc["results"] if r["name"] == "agreement_dice"]
    assert check["passed"] is (row["dice"] >= 0.7) and check["metadata"]["n_pairs"] == 1

    assert materialize([cohort_agreement], instance=instance, resources=site_resources).success
    cohort = pd.read_parquet(data_root / "cohort" / "agreement.parquet")
    assert list(cohort["roi_std"]) == ["Bladder"]


def test_hnscc_spellings_meet_under_one_standard_name(drop, data_root, resources, instance):
    """The real HNSCC courses name the same organs differently ("Rt Parotid" / "R parotid",
    "Cord" / "cord", "Brainstem" / "Brain stem"): a cohort query by roi_std finds all three."""
    hnscc = copy_shared("hnscc", drop)
    for patient in sorted(p for p in hnscc.iterdir() if p.is_dir()):
        add_uniform_plan_and_dose(patient)
    keys = add(instance, drop, data_root)
    assert len(keys) == 3
    for key in keys:
        assert materialize([*COURSE[:6], radiomics], partition_key=key, instance=instance, resources=resources).success
    assert materialize(
        [cohort_dvh_metrics, cohort_unmapped_rois, cohort_radiomics], instance=instance, resources=resources
    ).success
    cohort = pd.read_parquet(data_root / "cohort" / "dvh_metrics.parquet")
    for std in ("SpinalCord", "Brainstem", "Parotid_L", "Parotid_R"):
        rows = cohort[cohort["roi_std"] == std]
        assert set(rows["course_key"]) == set(keys), (std, sorted(cohort["roi_name"].unique()))
        assert (rows["mean_gy"] - 50.0).abs().max() < 0.5
        # 25 x 2 Gy: EQD2 = physical dose whatever the alpha/beta
        assert (rows["mean_eqd2_gy"] - 50.0).abs().max() < 0.5 and (rows["eqd2_reason"] == "").all()
    bands = instance.fetch_materializations(AssetKey("cohort_dvh_metrics"), limit=1).records[0]
    assert "data:image/png;base64" in bands.asset_materialization.metadata["dvh_bands"].value  # shown in the UI
    cord = cohort[cohort["roi_std"] == "SpinalCord"]
    assert (cord["alpha_beta_gy"] == 2.0).all()
    features = pd.read_parquet(data_root / "cohort" / "radiomics.parquet")
    assert set(features.loc[features["roi_std"] == "SpinalCord", "course_key"]) == set(keys)
    unmapped = pd.read_parquet(data_root / "cohort" / "unmapped_rois.parquet")
    assert not set(unmapped["roi_name"]) & {"Cord", "cord", "Brain stem", "Rt Parotid", "L parotid"}
    mat = instance.fetch_materializations(AssetKey("cohort_unmapped_rois"), limit=1).records[0]
    assert "TG-263" in mat.asset_materialization.metadata["mapping"].value


def test_a_changed_mapping_makes_only_the_naming_cohort_tables_stale(drop, data_root, site_resources, instance):
    """The daemon path: cohort_sensor rebuilds the tables that map names when the mapping of the
    code location's settings differs from the one they were built with; the others stay."""
    from rt_assets.config import current_settings, use_settings
    from rt_assets.sensors.cohort_sensor import stale_cohort_tables

    write_analytic_course(drop / "a", "uniform", **GRID)
    (key,) = add(instance, drop, data_root)
    assert materialize(COURSE, partition_key=key, instance=instance, resources=site_resources).success
    assert materialize(
        [cohort_dvh_metrics, cohort_agreement], instance=instance, resources=site_resources
    ).success  # built with the site mapping
    site = current_settings().model_copy(
        update={
            "science": current_settings().science.model_copy(update={"roi_names": site_resources["science"].roi_names})
        }
    )
    try:
        use_settings(site)
        stale = stale_cohort_tables(instance, None)
        assert "cohort_dvh_metrics" not in stale and "cohort_agreement" not in stale
        use_settings(site.model_copy(update={"science": site.science.model_copy(update={"roi_names": ""})}))
        stale = stale_cohort_tables(instance, None)
        assert "cohort_dvh_metrics" in stale and "cohort_agreement" not in stale  # only the table that maps names
    finally:
        use_settings(None)


def test_an_eqd2_row_of_another_mapping_is_not_joined():
    """The cohort joins a course's EQD2 only where it was computed under the current standard name
    (its alpha/beta depends on it); otherwise the columns are empty and the reason says why."""
    from rt_resources.dvh.eqd2 import with_eqd2

    ids = {"course_key": ["c-1", "c-1"], "roi_name": ["Box", "Cyl"], "source": ["manual", "manual"]}
    metrics = pd.DataFrame({**ids, "roi_std": ["SpinalCord", None], "mean_gy": [70.0, 70.0]})
    eqd2 = pd.DataFrame(
        {
            **ids,
            "method": "contour",
            "roi_std": [None, None],  # computed before Box was mapped to SpinalCord
            "alpha_beta_gy": [3.0, 3.0],
            "alpha_beta_source": ["default: normal tissue (late)"] * 2,
            "fractions": ["25+8"] * 2,
            "eqd2_reason": ["", ""],
            **{c: [72.0, 72.0] for c in ("mean_eqd2_gy", "min_eqd2_gy", "max_eqd2_gy", "d2_eqd2_gy", "d50_eqd2_gy")},
            **{c: [72.0, 72.0] for c in ("d95_eqd2_gy", "d98_eqd2_gy", "d1cc_eqd2_gy", "d0_1cc_eqd2_gy")},
        }
    )
    out = with_eqd2(metrics, eqd2).set_index("roi_name")
    assert len(out) == 2 and out.loc["Cyl", "mean_eqd2_gy"] == 72.0 and out.loc["Cyl", "eqd2_reason"] == ""
    assert np.isnan(out.loc["Box", "mean_eqd2_gy"]) and "mapping changed" in out.loc["Box", "eqd2_reason"]
    empty = with_eqd2(metrics.iloc[:0], eqd2)
    assert len(empty) == 0 and "mean_eqd2_gy" in empty.columns


def test_a_site_alpha_beta_name_that_matches_no_structure_is_refused(tmp_path):
    """A typo in a site alpha/beta file would silently never apply: refused with the fix."""
    for text, hint in (
        ("organs:\n  SpinalChord: 1.5\n", "did you mean SpinalCord"),
        ("targets:\n  PTV70: 1.5\n", "write it as PTV_7000"),
    ):
        path = tmp_path / "ab.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=hint) as err:
            ScienceConfig(alpha_beta=str(path)).alpha_beta_table()
        assert str(path) in str(err.value)
    path.write_text("targets:\n  PTV_7000: 1.5\norgans:\n  SpinalCord_PRV05: 1.8\n")
    table = ScienceConfig(alpha_beta=str(path)).alpha_beta_table()
    assert table.lookup("PTV_7000").value_gy == 1.5 and table.lookup("SpinalCord_PRV05").value_gy == 1.8
    assert table.lookup("IGTV").value_gy == 10.0 and table.lookup("Brainstem_PRV03").value_gy == 2.0
