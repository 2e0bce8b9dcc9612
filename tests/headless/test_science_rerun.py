"""A changed structure-name mapping, through `rtpipeline run` on the run queue: only the tables
that use the mapping run again (the course's EQD2 and agreement tables, the cohort tables that map
names); no DVH and no radiomics is recomputed."""

import dataclasses

import pandas as pd
import pytest
from dagster import AssetKey

from rt_resources.synthetic import write_patient
from tests.headless.helpers import cli_env, instance_of, run_cli, runs_of
from tests.helpers import SMALL


def materializations(instance, asset: str) -> int:
    return len(instance.fetch_materializations(AssetKey(asset), limit=100).records)


@pytest.mark.slow
def test_a_changed_name_mapping_reruns_only_the_tables_that_use_it(drop, tmp_path):
    write_patient(drop, 0, dataclasses.replace(SMALL, boost=True))
    out = tmp_path / "out"
    first = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out))
    assert first.returncode == 0, first.stdout + first.stderr
    instance = instance_of(out)
    dvh = pd.read_parquet(out / "cohort" / "dvh_metrics.parquet").set_index("roi_name")
    assert pd.isna(dvh.loc["PTV_boost", "roi_std"]) and dvh.loc["Lung_L", "roi_std"] == "Lung_L"
    assert "has no TG-263 name" in dvh.loc["PTV_boost", "alpha_beta_source"]
    assert "PTV_boost" in set(pd.read_parquet(out / "cohort" / "unmapped_rois.parquet")["roi_name"])
    before = {a: materializations(instance, a) for a in ("dvh", "radiomics", "dvh_eqd2", "contour_agreement")}
    n_course_runs = len(runs_of(instance, "course_job"))

    names = tmp_path / "site_names.yaml"
    names.write_text("synonyms:\n  PTV_High: [PTV_boost]\n")
    changed = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), env=cli_env(RT_ROI_NAMES=str(names)))
    assert changed.returncode == 0, changed.stdout + changed.stderr
    assert "settings changed" in changed.stdout
    (rerun,) = runs_of(instance, "course_job")[: len(runs_of(instance, "course_job")) - n_course_runs]
    assert {k.to_user_string() for k in rerun.asset_selection} == {"dvh_eqd2", "contour_agreement"}
    after = {a: materializations(instance, a) for a in before}
    assert after["dvh"] == before["dvh"] and after["radiomics"] == before["radiomics"]
    assert after["dvh_eqd2"] == before["dvh_eqd2"] + 1
    dvh = pd.read_parquet(out / "cohort" / "dvh_metrics.parquet").set_index("roi_name")
    assert dvh.loc["PTV_boost", "roi_std"] == "PTV_High" and dvh.loc["PTV_boost", "roi_std_rule"] == "site"
    assert "PTV_boost" not in set(pd.read_parquet(out / "cohort" / "unmapped_rois.parquet")["roi_name"])
    # its alpha/beta chosen again, now by its standard name: a target, the tumour default
    assert (
        dvh.loc["PTV_boost", "alpha_beta_gy"] == 10.0 and dvh.loc["PTV_boost", "alpha_beta_source"] == "default: tumour"
    )

    again = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), env=cli_env(RT_ROI_NAMES=str(names)))
    assert again.returncode == 0 and "0 processed, 1 unchanged" in again.stdout, again.stdout
