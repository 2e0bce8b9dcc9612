"""Automatic organs reach every table through `rtpipeline run`: with the stand-in segmentation (the
real worker, GPU step, lease and output layout; organ-shaped masks with TotalSegmentator's names),
the course and cohort DVH, radiomics and preview hold every non-empty automatic organ, with and
without custom-structure rules.

Regression: without rules `custom_structures` materialized nothing, and Dagster skipped the DVH,
radiomics and preview after it in the derived run, so the cohort tables held manual rows only."""

import json

import pandas as pd
import pytest

from rt_resources.synthetic import SynthOptions, write_patient
from tests.headless.helpers import cli_env, instance_of, run_cli, runs_of
from tests.helpers import FAST_RADIOMICS

#: a short torso: 64 x 64 x 40 at 6 x 8 mm (384 mm field, 320 mm scan), organs inside
TORSO = SynthOptions(rows=64, slices=40, pixel_mm=6.0, slice_mm=8.0)

RULES = """
structures:
  - {name: PTV_minus_heart, op: subtract, a: [manual/PTV], b: [totalseg/heart]}
  - {name: lungs, op: union, a: [totalseg/lung_upper_lobe_left, totalseg/lung_upper_lobe_right]}
"""


def standin_env(**extra: str) -> dict[str, str]:
    return cli_env(
        RT_TOTALSEG_BACKEND="standin",
        RT_TOTALSEG_DEVICE="cpu",
        RT_SEG_WORKER_IDLE_S="20",
        RT_RADIOMICS_PARAMS=str(FAST_RADIOMICS),
        **extra,
    )


def auto_organs(course_dir) -> set[str]:
    index = json.loads((course_dir / "masks" / "totalseg" / "rois.json").read_text())
    return {r["roi_name"] for r in index if not r["empty"]}


@pytest.mark.slow
@pytest.mark.parametrize("rules", [False, True], ids=["no_rules", "custom_rules"])
def test_auto_organs_reach_course_and_cohort_tables_through_the_cli(drop, tmp_path, rules):
    write_patient(drop, 0, TORSO)
    out = tmp_path / "out"
    args = ["run", "--dicom-root", str(drop), "--outdir", str(out), "--totalseg-device", "cpu", "--workers", "2"]
    if rules:
        (tmp_path / "rules.yaml").write_text(RULES)
        args += ["--custom-structures", str(tmp_path / "rules.yaml")]
    proc = run_cli(*args, env=standin_env(), timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 processed, 0 unchanged, 0 failed" in proc.stdout, proc.stdout

    (course_dir,) = (out / "courses").iterdir()
    organs = auto_organs(course_dir)
    assert len(organs) >= 60  # the stand-in's organs inside this short scan
    instance = instance_of(out)
    from dagster import AssetKey, DagsterEventType

    radiomics = instance.fetch_materializations(AssetKey("radiomics"), limit=1).records[0].asset_materialization
    # at these 6 x 6 x 8 mm voxels the smallest vessels have under radiomics' 10 voxels: skipped, saying so
    too_small = {s["roi_name"] for s in radiomics.metadata["skipped"].value if "min_voxels" in s["reason"]}
    assert len(too_small) <= 6
    for table in ("dvh_metrics", "radiomics"):
        course = pd.read_parquet(course_dir / f"{table}.parquet")
        cohort = pd.read_parquet(out / "cohort" / f"{table}.parquet")
        expected = organs - too_small if table == "radiomics" else organs
        for frame in (course, cohort):
            assert set(frame.loc[frame.source == "totalseg", "roi_name"]) == expected, table
            assert (frame.source == "manual").any()
            if rules:
                assert {"PTV_minus_heart", "lungs"} <= set(frame.loc[frame.source == "custom", "roi_name"])
            else:
                assert not (frame.source == "custom").any()

    (derived,) = runs_of(instance, "derived_job")
    skipped = [
        e.step_key
        for e in instance.all_logs(derived.run_id, of_type=DagsterEventType.STEP_SKIPPED)
        if e.step_key in ("dvh", "radiomics", "course_preview")
    ]
    assert not skipped  # the regression: these were skipped after an unmaterialized custom_structures
    preview = instance.fetch_materializations(AssetKey("course_preview"), limit=1).records[0]
    assert preview.run_id == derived.run_id
    # the course stage left the DVH, radiomics and preview to the derived stage: computed once
    (course_run,) = runs_of(instance, "course_job")
    course_steps = {e.step_key for e in instance.all_logs(course_run.run_id, of_type=DagsterEventType.STEP_SUCCESS)}
    assert "totalseg_input" in course_steps and not course_steps & {"dvh", "radiomics", "course_preview"}
