"""Settings: one typed object; defaults < file < environment < options; errors name the source;
secrets are named, never carried."""

import pytest
import yaml

from rt_resources.resources import resource_configs, resources_from_settings, run_config
from rt_resources.settings import (
    INSTANCE_SETTINGS_FILE,
    SettingsError,
    load_settings,
    read_license_key,
    settings_file,
    write_settings,
)


def test_precedence_defaults_file_environment_options(tmp_path):
    file = tmp_path / "conf" / "rt.yaml"
    file.parent.mkdir()
    file.write_text(
        yaml.safe_dump(
            {"data_root": "out", "workers": 3, "radiomics": {"params": "p.yaml"}, "totalsegmentator": {"fast": True}}
        )
    )
    s = load_settings(file, environ={})
    assert s.data_root == str(tmp_path / "conf" / "out")  # relative to the file's folder
    assert s.radiomics.params == str(tmp_path / "conf" / "p.yaml")
    assert s.workers == 3 and s.totalsegmentator.fast and s.quiet_period_s == 60.0  # the rest: defaults

    env = {"RT_WORKERS": "5", "RT_CROP_REGIONS": "pelvis, thorax", "RT_SEQUENTIAL_RADIOMICS": "yes"}
    s = load_settings(file, environ=env)
    assert s.workers == 5 and s.segmentation.crop_regions == ["pelvis", "thorax"] and s.radiomics.sequential
    assert s.totalsegmentator.fast  # the file still counts where the environment is silent

    s = load_settings(file, environ=env, overrides={"workers": 2, "totalsegmentator": {"device": "cpu"}})
    assert s.workers == 2 and s.totalsegmentator.device == "cpu" and s.totalsegmentator.fast


def test_instance_file_is_read_from_dagster_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    assert settings_file({"DAGSTER_HOME": str(home)}) is None
    settings = load_settings(environ={}, overrides={"drop_root": str(tmp_path / "drop")})
    write_settings(settings, home / INSTANCE_SETTINGS_FILE)
    assert settings_file({"DAGSTER_HOME": str(home)}) == home / INSTANCE_SETTINGS_FILE
    assert load_settings(environ={"DAGSTER_HOME": str(home)}).drop_root == str(tmp_path / "drop")
    explicit = tmp_path / "other.yaml"
    explicit.write_text("workers: 7\n")
    assert load_settings(environ={"DAGSTER_HOME": str(home), "RT_SETTINGS": str(explicit)}).workers == 7


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("file", "settings file"),
        ("env", "environment variable RT_WORKERS"),
        ("options", "options"),
    ],
)
def test_a_bad_value_names_its_source(tmp_path, source, expected):
    file = tmp_path / "s.yaml"
    file.write_text("workers: many\n" if source == "file" else "workers: 1\n")
    env = {"RT_WORKERS": "-3"} if source == "env" else {}
    overrides = {"priority": "random"} if source == "options" else None
    with pytest.raises(SettingsError) as err:
        load_settings(file, environ=env, overrides=overrides)
    assert expected in str(err.value)
    if source == "file":
        assert str(file) in str(err.value) and "workers" in str(err.value)


def test_unknown_keys_and_broken_yaml_are_refused(tmp_path):
    file = tmp_path / "s.yaml"
    file.write_text("radiomics:\n  paramz: x.yaml\n")
    with pytest.raises(SettingsError, match="paramz"):
        load_settings(file, environ={})
    file.write_text("workers: [1\n")
    with pytest.raises(SettingsError, match="not valid YAML"):
        load_settings(file, environ={})


def test_licence_key_is_named_never_carried(tmp_path):
    secret = "LIC-0123456789"
    s = load_settings(environ={"RT_TOTALSEG_LICENSE": secret})
    assert secret not in yaml.safe_dump(s.public())
    assert secret not in str(run_config(s)) and secret not in str(resource_configs(s))
    assert read_license_key(s.totalsegmentator, {"RT_TOTALSEG_LICENSE": secret}) == secret
    key_file = tmp_path / "licence.txt"
    key_file.write_text(secret + "\n")
    from_file = load_settings(environ={}, overrides={"totalsegmentator": {"license_file": str(key_file)}})
    assert read_license_key(from_file.totalsegmentator, {}) == secret
    ts = resources_from_settings(from_file)["totalsegmentator"]
    assert ts.settings().license_key == secret  # read in the step, from the file
    assert secret not in str(ts.model_dump())


def test_resources_and_run_config_carry_the_same_values(tmp_path):
    s = load_settings(
        environ={}, overrides={"data_root": str(tmp_path / "d"), "workers": 3, "radiomics": {"sequential": True}}
    )
    res = resources_from_settings(s)
    config = run_config(s)["resources"]
    assert res["data_root"].path == config["data_root"]["config"]["path"] == str(tmp_path / "d")
    assert res["radiomics_config"].workers == 3 and res["radiomics_config"].sequential
    assert res["compute"].workers == 3


def test_radiomics_backend_and_robustness_settings():
    from rt_assets.cli import build_parser
    from rt_assets.commands import settings_overrides

    s = load_settings(environ={"RT_RADIOMICS_BACKEND": "auto", "RT_RADIOMICS_ROBUSTNESS": "5"})
    assert s.radiomics.backend == "auto" and s.radiomics.robustness == 5
    configs = resource_configs(s)
    assert configs["radiomics_config"]["backend"] == "auto"
    assert configs["robustness_config"] == {"perturbations": 5, "threshold": 0.9}
    with pytest.raises(SettingsError, match="pyradiomics"):
        load_settings(environ={"RT_RADIOMICS_BACKEND": "gpu"})
    with pytest.raises(SettingsError, match="at least 2 perturbations"):
        load_settings(environ={"RT_RADIOMICS_ROBUSTNESS": "1"})
    args = build_parser().parse_args(
        ["run", "--dicom-root", "d", "--outdir", "o", "--radiomics-backend", "fastrad", "--radiomics-robustness", "3"]
    )
    s = load_settings(environ={}, overrides=settings_overrides(args, "d", "o"))
    assert s.radiomics.backend == "fastrad" and s.radiomics.robustness == 3
