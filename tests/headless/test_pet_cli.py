"""A PET/CT cohort the way a user runs it: `rtpipeline synth --pet` (one patient per vendor's SUV
headers: Siemens BQML, GE BQML with a re-processed series time and no start date, Philips CNTS with
its private factors), then `rtpipeline run`: the cohort SUV table has the analytic lesion's SUV and
volume for every vendor, and no PET file is in the ledger."""

import math

import pandas as pd
import pytest

from rt_resources.synthetic import PET_LESION_SUV, SynthOptions, course_context, pet_lesion
from tests.headless.helpers import cli_env, run_cli
from tests.helpers import FAST_RADIOMICS

SIZE = ("--rows", "64", "--pixel-mm", "5", "--slices", "40", "--slice-mm", "3")


@pytest.mark.slow
def test_pet_ct_cohort_through_the_cli(tmp_path):
    drop, out = tmp_path / "drop", tmp_path / "out"
    synth = run_cli("synth", "--out", str(drop), "--patients", "3", "--pet", *SIZE)
    assert synth.returncode == 0, synth.stderr
    env = cli_env(RT_RADIOMICS_PARAMS=str(FAST_RADIOMICS), RT_RADIOMICS_BASIC_PARAMS=str(FAST_RADIOMICS))
    proc = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), env=env, timeout=1200)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    table = pd.read_parquet(out / "cohort" / "pet_metrics.parquet")
    assert table["course_key"].nunique() == 3
    opts = SynthOptions(rows=64, pixel_mm=5.0, slices=40, slice_mm=3.0, pet="cycle")
    courses = pd.read_parquet(out / "cohort" / "courses.parquet")
    for key, rows in table.groupby("course_key"):
        ptv = rows[(rows["roi_name"] == "PTV") & (rows["source"] == "manual")].iloc[0]
        assert ptv["suv_max"] == pytest.approx(PET_LESION_SUV, rel=0.01), key
        assert ptv["suv_mean"] == pytest.approx(PET_LESION_SUV, rel=0.01), key
        assert ptv["roi_std"] == "PTV"
        index = int(courses.set_index("course_key").loc[key, "patient_id"][-3:])
        radius = pet_lesion(course_context(drop, index, opts).phantom).semi_axes[0]
        body = rows[rows["roi_name"] == "BODY"].iloc[0]
        assert body["mtv40_cc"] == pytest.approx(4 / 3 * math.pi * radius**3 / 1000, rel=0.03), key
    report = pd.read_parquet(out / "cohort" / "ingest_report.parquet")
    assert not (report["kind"] == "PT").any(), report[report["kind"] == "PT"]
    radiomics = pd.read_parquet(out / "cohort" / "radiomics.parquet")
    assert (radiomics["source"] == "pet1/manual").sum() >= 3 * 5
