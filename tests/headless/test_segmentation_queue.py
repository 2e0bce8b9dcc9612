"""The GPU invariant on the CLI path: with a (tiny) TotalSegmentator model, `rtpipeline run`
submits each course's segmentation as soon as its course stage is done; a segmentation step of
one course overlaps another course's CPU stage, and no two inferences ever overlap (one more GPU step
may wait at the device lease with its input ready). The test holds the device for a while, as another
GPU user would, so the window for that overlap exists however fast the machine is."""

import time

import pytest

from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
from rt_resources.synthetic import SynthOptions, write_patient
from tests.headless.helpers import (
    cli_env,
    held_device,
    inference_intervals,
    instance_of,
    run_cli,
    runs_of,
    start_cli,
    step_intervals,
    step_started,
)
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


def gpu_steps_begun(out) -> list[tuple[str, float]]:
    """(partition, time) of the inference steps begun (they wait at the device lease)."""
    if not (out / ".dagster" / "dagster.yaml").exists():  # the CLI has not made its instance yet
        return []
    with instance_of(out) as instance:
        return step_started(instance, "totalseg_inference")


def cpu_step_after_a_gpu_step_began(out) -> bool:
    """Whether a CPU stage of one course finished after another course's inference step began and
    before that step ended."""
    with instance_of(out) as instance:
        steps = step_intervals(instance)
        ended = {s["partition"] for s in steps if s["step"] == "totalseg_inference"}
        return any(
            s["step"] in CPU_STEPS and s["partition"] != partition and s["end"] > start
            for partition, start in step_started(instance, "totalseg_inference")
            if partition not in ended
            for s in steps
        )


@pytest.mark.slow
def test_cli_segmentation_pipelines_with_other_courses(drop, tmp_path):
    ts_home = tmp_path / "totalseg_home"
    build_tiny_totalseg_model(ts_home, "total_fast")
    write_patient(drop, 0, SMALL)  # small: first done, segmented while the larger ones still compute
    for i in (1, 2):
        write_patient(drop, i, SynthOptions(**{**SMALL.__dict__, "rows": 64, "slices": 30, "pixel_mm": 6.0}))
    out = tmp_path / "out"
    env = cli_env(TOTALSEG_HOME_DIR=str(ts_home), **noise_radiomics_env())
    log = tmp_path / "cli.log"
    args = ("run", "--dicom-root", str(drop), "--outdir", str(out), "--totalseg-device", "cpu", "--totalseg-fast")
    # The courses' own stages take seconds; so that one course's CPU stages (its derived run) must
    # run while another course's GPU step is in progress, the test holds the device as another GPU
    # user would: it lets the first inference through once two GPU steps wait, takes the device back
    # the moment that inference ends, and releases it when the first course's derived stages ran.
    with held_device(out / "index") as hold:  # the data root's state folder
        proc = start_cli(*args, log=log, env=env)
        deadline = time.time() + 600
        while proc.poll() is None and time.time() < deadline and len(gpu_steps_begun(out)) < 2:
            time.sleep(1)
        assert len(gpu_steps_begun(out)) == 2, log.read_text()
        hold.take_back_after_one_lease()
        window = False
        while proc.poll() is None and time.time() < deadline and not window:
            time.sleep(2)
            window = cpu_step_after_a_gpu_step_began(out)
    assert window, "no CPU stage of one course finished while another course's GPU step waited: " + log.read_text()
    assert proc.wait(timeout=900) == 0, log.read_text()
    assert "totalseg_inference: one inference per GPU slot" in log.read_text()
    instance = instance_of(out)
    seg_runs = runs_of(instance, "segmentation_job")
    assert len(seg_runs) == 3 and all(r.tags["rt/gpu"] == "true" for r in seg_runs)
    assert len(runs_of(instance, "derived_job")) == 3  # crops, DVH and radiomics with the auto structures
    steps = step_intervals(instance)
    seg = inference_intervals(instance)  # the device leases of the inference steps
    assert len({s["partition"] for s in seg}) == 3
    for a, b in zip(seg, seg[1:], strict=False):
        assert b["start"] >= a["end"], f"inferences overlap: {a} and {b}"
    seg_steps = [s for s in steps if s["step"] == "totalseg_inference"]
    overlaps = [
        (c["partition"], c["step"], s["partition"])
        for c in steps
        if c["step"] in CPU_STEPS
        for s in seg_steps
        if c["partition"] != s["partition"] and c["start"] < s["end"] and s["start"] < c["end"]
    ]
    assert overlaps, "no CPU stage of one course ran during another course's segmentation"
    for key in {s["partition"] for s in seg}:
        assert (out / "courses" / key / "masks" / "totalseg").is_dir()

    again = run_cli(
        "run", "--dicom-root", str(drop), "--outdir", str(out), "--totalseg-device", "cpu", "--totalseg-fast", env=env
    )
    assert again.returncode == 0 and "3 unchanged" in again.stdout  # segmented courses are not segmented again
