"""Which parameter set each ROI gets (radiomics.policy), from the settings to the engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from rt_resources.radiomics import PARAMS_DIR, RadiomicsSettings, RadiomicsTask
from rt_resources.radiomics.course import core_seconds, params_sha256, size_bucket
from rt_resources.radiomics.policy import DEFAULT_FULL_ROIS, ParamSet
from rt_resources.resources import RadiomicsConfig, resources_from_settings
from rt_resources.settings import SettingsError, load_settings


def task(roi: str, source: str, volume_cc: float = 50.0, params: Path | None = None) -> RadiomicsTask:
    return RadiomicsTask(roi, source, Path(f"{roi}.nii.gz"), int(volume_cc * 300), volume_cc, None, params)


def sets(settings: RadiomicsSettings, tasks: list[RadiomicsTask]) -> dict[str, ParamSet]:
    return {f"{t.source}/{t.roi_name}": settings.choose(t).param_set for t in tasks}


COURSE = [
    task("GTV", "manual"),
    task("BODY", "manual", volume_cc=25_000),
    task("PTV-Lung", "custom"),
    task("heart", "totalseg", volume_cc=600),
    task("Lung_Upper_Lobe_Left", "totalseg", volume_cc=1200),  # names match case-insensitively
    task("rib_left_1", "totalseg", volume_cc=8),
    task("vertebrae_T5", "totalseg", volume_cc=30),
    task("liver", "totalseg", volume_cc=2500),  # listed, but very large: light like BODY
    task("heart", "mycardiac"),  # an nnU-Net model's source: listed names count whatever the source
    task("gland", "mycardiac"),
    task("GTV", "mr1/manual", params=PARAMS_DIR / "MR.yaml"),
]


def test_default_policy_full_for_manual_and_listed_organs_basic_for_the_others():
    settings = RadiomicsSettings(policy="default")
    assert sets(settings, COURSE) == {
        "manual/GTV": ParamSet.FULL,
        "manual/BODY": ParamSet.LIGHT,
        "custom/PTV-Lung": ParamSet.FULL,
        "totalseg/heart": ParamSet.FULL,
        "totalseg/Lung_Upper_Lobe_Left": ParamSet.FULL,
        "totalseg/rib_left_1": ParamSet.BASIC,
        "totalseg/vertebrae_T5": ParamSet.BASIC,
        "totalseg/liver": ParamSet.LIGHT,
        "mycardiac/heart": ParamSet.FULL,
        "mycardiac/gland": ParamSet.BASIC,
        "mr1/manual/GTV": ParamSet.MR,
    }
    rib = settings.choose(COURSE[5])
    assert rib.params == PARAMS_DIR / "CT_basic.yaml" and "not in full_rois" in rib.reason
    assert "full_sources" in settings.choose(COURSE[0]).reason and "full_rois" in settings.choose(COURSE[3]).reason
    assert settings.choose(COURSE[1]).reason.startswith("very large ROI (25000 cc")
    assert settings.choose(COURSE[-1]).params == PARAMS_DIR / "MR.yaml"


def test_full_and_basic_policies():
    full = sets(RadiomicsSettings(policy="full"), COURSE)
    assert {k for k, v in full.items() if v is ParamSet.FULL} == set(full) - {
        "manual/BODY",
        "totalseg/liver",
        "mr1/manual/GTV",
    }
    basic = sets(RadiomicsSettings(policy="basic"), COURSE)
    assert basic["manual/GTV"] is ParamSet.BASIC and basic["totalseg/heart"] is ParamSet.BASIC
    assert basic["manual/BODY"] is ParamSet.LIGHT and basic["mr1/manual/GTV"] is ParamSet.MR
    # the engine's own default is full: a caller naming params gets that file for every ROI
    assert RadiomicsSettings().policy == "full" and RadiomicsSettings().params_for(COURSE[5]) == PARAMS_DIR / "CT.yaml"


def test_full_rois_patterns_and_sources():
    settings = RadiomicsSettings(policy="default", full_sources=("manual",), full_rois=("lung_*",))
    chosen = sets(settings, [task("lung_lower_lobe_right", "totalseg"), task("heart", "totalseg"), task("X", "custom")])
    assert list(chosen.values()) == [ParamSet.FULL, ParamSet.BASIC, ParamSet.BASIC]
    with pytest.raises(ValueError, match="everything"):
        RadiomicsSettings(policy="everything")


def test_default_full_rois_are_totalsegmentator_total_classes():
    map_to_binary = pytest.importorskip("totalsegmentator.map_to_binary")
    classes = set(map_to_binary.class_map["total"].values())
    assert set(DEFAULT_FULL_ROIS) <= classes
    assert "rectum" not in classes  # why the docstring sends the rectum to the manual source


def test_settings_reach_the_engine(tmp_path):
    basic = tmp_path / "basic.yaml"
    basic.write_text((PARAMS_DIR / "CT_basic.yaml").read_text())
    environ = {
        "RT_RADIOMICS_POLICY": "default",
        "RT_RADIOMICS_FULL_SOURCES": "manual",
        "RT_RADIOMICS_FULL_ROIS": "heart, lung_*",
        "RT_RADIOMICS_BASIC_PARAMS": str(basic),
        "RT_RADIOMICS_LIGHT_PARAMS": str(basic),
    }
    settings = load_settings(environ=environ, overrides={"data_root": str(tmp_path / "d")})
    engine = resources_from_settings(settings)["radiomics_config"].settings()
    assert engine.policy == "default" and engine.full_sources == ("manual",)
    assert engine.full_rois == ("heart", "lung_*") and engine.basic_params == basic
    assert engine.light_params == basic
    defaults = load_settings(environ={}, overrides={"data_root": str(tmp_path / "d")}).radiomics
    assert defaults.policy == "default" and defaults.full_rois == list(DEFAULT_FULL_ROIS)
    assert defaults.full_sources == ["manual", "custom"] and defaults.basic_params == ""
    with pytest.raises(SettingsError, match="policy"):
        load_settings(environ={"RT_RADIOMICS_POLICY": "most"}, overrides={"data_root": str(tmp_path / "d")})


def test_a_changed_policy_changes_the_output_config():
    base = RadiomicsConfig()
    assert base.settings().policy == "default" and base.settings().basic_params == PARAMS_DIR / "CT_basic.yaml"
    assert base.settings().light_params == PARAMS_DIR / "CT_light.yaml"
    full = RadiomicsConfig(policy="full")
    assert base.output_config() != full.output_config()
    assert base.output_config() != RadiomicsConfig(full_rois=["heart"]).output_config()
    assert base.output_config() == RadiomicsConfig(full_rois=list(reversed(DEFAULT_FULL_ROIS))).output_config()
    # under policy full the lists and the basic file decide nothing
    assert full.output_config() == RadiomicsConfig(policy="full", full_rois=["heart"]).output_config()
    assert params_sha256(full.settings()) != params_sha256(base.settings())


def test_core_seconds_by_size_and_parameter_set():
    rois = [
        {"volume_cc": 2.0, "param_set": "basic", "cpu_s": 0.5},
        {"volume_cc": 9.99, "param_set": "full", "cpu_s": 1.5},
        {"volume_cc": 150.0, "param_set": "full", "cpu_s": 15.5},
        {"volume_cc": 1500.0, "param_set": "full", "cpu_s": 89.0},
        {"volume_cc": 20000.0, "param_set": "light", "cpu_s": 30.0},
        {"volume_cc": 50.0, "param_set": "full", "cpu_s": None},  # failed: not counted
    ]
    assert [size_bucket(v) for v in (0, 10, 100, 999.9, 1000)] == [
        "<10 cc",
        "10-100 cc",
        "100-1000 cc",
        "100-1000 cc",
        ">=1000 cc",
    ]
    summary = core_seconds(rois)
    assert summary["total_s"] == pytest.approx(136.5)
    assert summary["by_size"] == {
        "<10 cc": {"n_rois": 2, "cpu_s": 2.0},
        "10-100 cc": {"n_rois": 0, "cpu_s": 0.0},
        "100-1000 cc": {"n_rois": 1, "cpu_s": 15.5},
        ">=1000 cc": {"n_rois": 2, "cpu_s": 119.0},
    }
    assert summary["by_param_set"]["full"] == {"n_rois": 3, "cpu_s": 106.0}
    assert summary["by_param_set"]["mr"] == {"n_rois": 0, "cpu_s": 0.0}


BASIC_FIRSTORDER = "imageType:\n  Original: {}\nfeatureClass:\n  firstorder:\nsetting:\n  label: 1\n  binWidth: 25\n"


@pytest.fixture
def course_with_organs(synth, tmp_path) -> dict[str, Path]:
    """The synthetic course's manual masks plus three auto-segmented organs (masks/totalseg/), and a
    basic parameter file with first-order features only (so that its rows are told apart)."""
    import shutil

    masks = tmp_path / "masks"
    shutil.copytree(synth["masks"] / "manual", masks / "manual")
    (masks / "totalseg").mkdir()
    for organ, like in {"heart": "ROI_A", "rib_left_1": "ROI_B", "vertebrae_T5": "box"}.items():
        shutil.copy(synth["masks"] / "manual" / f"{like}.nii.gz", masks / "totalseg" / f"{organ}.nii.gz")
    basic = tmp_path / "basic.yaml"
    basic.write_text(BASIC_FIRSTORDER)
    return {"image": synth["image"], "masks": masks, "full": synth["params"], "basic": basic}


def test_course_default_policy_records_each_rois_set_and_cost(course_with_organs):
    from rt_resources.qc.radiomics import radiomics_nan
    from rt_resources.radiomics import select_tasks
    from rt_resources.radiomics.course import course_radiomics, param_warnings

    c = course_with_organs
    settings = RadiomicsSettings(params=c["full"], basic_params=c["basic"], policy="default", light_params=None)
    frame, summary = course_radiomics(c["image"], c["masks"], "P1/C1", settings, workers=1, sequential=True)
    rois = {(r["source"], r["roi_name"]): r for r in summary["rois"]}
    assert {k: r["param_set"] for k, r in rois.items()} == {
        ("manual", "ROI_A"): "full",
        ("manual", "ROI_B"): "full",
        ("manual", "Box GTV"): "full",
        ("totalseg", "heart"): "full",
        ("totalseg", "rib_left_1"): "basic",
        ("totalseg", "vertebrae_T5"): "basic",
    }
    rib = rois[("totalseg", "rib_left_1")]
    assert rib["params"] == "basic.yaml" and "not in full_rois" in rib["reason"] and rib["ok"]
    assert rib["n_voxels"] == rois[("manual", "ROI_B")]["n_voxels"] > 0 and rib["volume_cc"] > 0
    assert all(r["cpu_s"] > 0 for r in rois.values())
    cost = summary["core_seconds"]
    assert cost["by_param_set"]["full"]["n_rois"] == 4 and cost["by_param_set"]["basic"]["n_rois"] == 2
    assert cost["by_size"]["<10 cc"]["n_rois"] == 6  # 2 mm voxels: every synthetic ROI is under 2 cc
    assert cost["total_s"] == pytest.approx(sum(r["cpu_s"] for r in rois.values()), abs=0.01)
    assert summary["policy"] == "default" and summary["param_warnings"] == []  # same setting block as FAST's
    # the shipped CT_basic.yaml resamples to 1 mm, the FAST full set does not: its columns would mix
    (warning,) = param_warnings(RadiomicsSettings(params=c["full"], policy="default"), select_tasks(c["masks"])[0])
    assert "interpolator, resampledPixelSpacing" in warning and "radiomics.basic_params" in warning

    # the table keeps its columns; a basic row has no shape features (NaN), QC counts its own only
    rows = frame.set_index(["source", "roi_name"])
    assert list(frame.columns[:3]) == ["course_key", "roi_name", "source"]
    assert (
        rows.loc[("totalseg", "rib_left_1"), "original_shape_MeshVolume"]
        != rows.loc[("totalseg", "rib_left_1"), "original_shape_MeshVolume"]
    )  # NaN
    assert rows.loc[("totalseg", "heart"), "original_shape_MeshVolume"] > 0
    for feature in ("original_firstorder_Mean", "original_firstorder_Entropy"):  # basic values are the full set's
        assert rows.loc[("totalseg", "rib_left_1"), feature] == pytest.approx(rows.loc[("manual", "ROI_B"), feature])
    param_sets = {k: r["param_set"] for k, r in rois.items()}
    check = radiomics_nan(frame, features_by_source=summary["own_features"], param_sets=param_sets)
    assert check.passed, check.description
    assert check.metadata["rows_by_param_set"] == {"basic": 2, "full": 4}
    assert not radiomics_nan(frame).passed  # counted against every column, the basic rows look half NaN


def test_course_full_policy_gives_every_roi_the_full_set(course_with_organs):
    from rt_resources.radiomics.course import course_radiomics

    c = course_with_organs
    settings = RadiomicsSettings(params=c["full"], basic_params=c["basic"], policy="full", light_params=None)
    frame, summary = course_radiomics(c["image"], c["masks"], "P1/C1", settings, workers=1, sequential=True)
    assert {r["param_set"] for r in summary["rois"]} == {"full"} and summary["param_warnings"] == []
    assert frame["original_shape_MeshVolume"].notna().all() and len(frame) == 6
