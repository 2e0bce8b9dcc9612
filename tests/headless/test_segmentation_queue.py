"""The GPU invariant on the CLI path: with a (tiny) TotalSegmentator model, `rtpipeline run`
submits each course's segmentation as soon as its course stage is done; a segmentation step of
one course overlaps another course's CPU stage, and no two inferences ever overlap (one more GPU step
may wait at the device lease with its input ready)."""

import pytest

from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
from rt_resources.synthetic import SynthOptions, write_patient
from tests.headless.helpers import cli_env, inference_intervals, instance_of, run_cli, runs_of, step_intervals
from tests.helpers import SMALL, noise_radiomics_env

CPU_STEPS = {
    "course_manifest",
    "ct_image",
    "dose_grid",
    "structure_masks",
    "dvh",
    "radiomics",
    "course_preview",
    "mr_images",
    "ct_crop",
    "custom_structures",
}


@pytest.mark.slow
def test_cli_segmentation_pipelines_with_other_courses(drop, tmp_path):
    ts_home = tmp_path / "totalseg_home"
    build_tiny_totalseg_model(ts_home, "total_fast")
    write_patient(drop, 0, SMALL)  # small: first done, segmented while the larger ones still compute
    for i in (1, 2):
        write_patient(drop, i, SynthOptions(**{**SMALL.__dict__, "rows": 64, "slices": 30, "pixel_mm": 6.0}))
    out = tmp_path / "out"
    env = cli_env(TOTALSEG_HOME_DIR=str(ts_home), **noise_radiomics_env())
    proc = run_cli(
        "run", "--dicom-root", str(drop), "--outdir", str(out), "--totalseg-device", "cpu", "--totalseg-fast", env=env
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "totalseg_inference: one inference per GPU slot" in proc.stderr
    instance = instance_of(out)
    seg_runs = runs_of(instance, "segmentation_job")
    assert len(seg_runs) == 3 and all(r.tags["rt/gpu"] == "true" for r in seg_runs)
    assert len(runs_of(instance, "derived_job")) == 3  # crops, DVH and radiomics with the auto structures
    steps = step_intervals(instance)
    seg = inference_intervals(instance)  # the device leases of the inference steps
    assert len({s["partition"] for s in seg}) == 3
    for a, b in zip(seg, seg[1:], strict=False):
        assert b["start"] >= a["end"], f"inferences overlap: {a} and {b}"
    overlaps = [
        (c["partition"], c["step"], s["partition"])
        for c in steps
        if c["step"] in CPU_STEPS
        for s in seg
        if c["partition"] != s["partition"] and c["start"] < s["end"] and s["start"] < c["end"]
    ]
    assert overlaps, "no CPU stage of one course ran during another course's segmentation"
    for key in {s["partition"] for s in seg}:
        assert (out / "courses" / key / "masks" / "totalseg").is_dir()

    again = run_cli(
        "run", "--dicom-root", str(drop), "--outdir", str(out), "--totalseg-device", "cpu", "--totalseg-fast", env=env
    )
    assert again.returncode == 0 and "3 unchanged" in again.stdout  # segmented courses are not segmented again
