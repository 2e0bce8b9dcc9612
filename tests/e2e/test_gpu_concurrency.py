"""The GPU invariant, checked with the real daemon: three courses dropped (the third while a
segmentation runs); no two inferences overlap in time (the device leases the inference steps
recorded), while a CPU stage of one course overlaps another course's inference. Segmentation runs
are tagged rt/gpu=true and hold the inference step only; dagster.yaml lets one more wait at the
device lease with its input ready (pool `gpu` and the rt/gpu run limit at 2)."""

import os
import shutil
import time

import pytest
from dagster import DagsterEventType, DagsterInstance

from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
from rt_resources.synthetic import write_patient
from tests.e2e.dagster_dev import MATERIALIZATIONS, RUNS, graphql, start_dagster_dev
from tests.headless.helpers import inference_intervals
from tests.helpers import SMALL, noise_radiomics_env

SEG_STEP = "totalseg_inference"
CPU_STEPS = {
    "course_manifest",
    "ct_image",
    "dose_grid",
    "structure_masks",
    "totalseg_input",
    "totalseg_masks",
    "totalseg_rtstruct",
    "dvh",
    "radiomics",
    "ct_crop",
    "custom_structures",
}


def step_intervals(instance) -> list[dict]:
    """(run, partition, step, start, end, tags) of every finished step in the instance."""
    out = []
    for run in instance.get_runs():
        starts, ends = {}, {}
        events = instance.all_logs(
            run.run_id,
            of_type={
                DagsterEventType.STEP_START,
                DagsterEventType.STEP_SUCCESS,
                DagsterEventType.STEP_FAILURE,
            },
        )
        for e in events:
            (starts if e.dagster_event.event_type == DagsterEventType.STEP_START else ends)[e.step_key] = e.timestamp
        for step, start in starts.items():
            if step in ends:
                out.append(
                    dict(
                        run=run.run_id,
                        partition=run.tags.get("dagster/partition"),
                        step=step,
                        start=start,
                        end=ends[step],
                        tags=run.tags,
                    )
                )
    return out


@pytest.mark.slow
def test_one_segmentation_at_a_time_while_cpu_stages_run(tmp_path):
    ts_home = tmp_path / "totalseg_home"
    build_tiny_totalseg_model(ts_home, "total_fast")
    env = {
        "TOTALSEG_HOME_DIR": str(ts_home),
        "RT_TOTALSEG_DEVICE": "cpu",
        "RT_TOTALSEG_FAST": "1",
        "RT_WORKERS": "1",
        **noise_radiomics_env(),
    }
    with start_dagster_dev(tmp_path, env) as (port, drop, data, log, home):
        staging = tmp_path / "staging"
        for i in range(3):
            write_patient(staging, i, SMALL)
        first, second, third = sorted(staging.iterdir())
        for folder in (first, second):
            shutil.move(str(folder), drop / folder.name)
        deadline = time.time() + 600
        # the third course arrives while a segmentation runs: its CPU stages must not wait for it
        while time.time() < deadline and not any(
            r["status"] == "STARTED" and {"key": "rt/gpu", "value": "true"} in r["tags"]
            for r in graphql(port, RUNS)["runsOrError"]["results"]
        ):
            time.sleep(1)
        shutil.move(str(third), drop / third.name)

        segmented: set[str] = set()
        while time.time() < deadline and len(segmented) < 3:
            mats = graphql(port, MATERIALIZATIONS % SEG_STEP)["assetOrError"].get("assetMaterializations", [])
            segmented = {m["partition"] for m in mats}
            time.sleep(3)
        assert len(segmented) == 3, log.read_text()[-8000:]

        os.environ["DAGSTER_HOME"] = str(home)
        try:
            with DagsterInstance.get() as instance:
                while time.time() < deadline and any(not r.is_finished for r in instance.get_runs()):
                    time.sleep(2)
                steps = step_intervals(instance)
        finally:
            del os.environ["DAGSTER_HOME"]

    seg_steps = [s for s in steps if s["step"] == SEG_STEP]
    assert all(s["tags"].get("rt/gpu") == "true" for s in seg_steps)  # runs that segment carry the GPU tag
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with DagsterInstance.get() as instance:
            seg = inference_intervals(instance)  # the device leases of the inference steps
    finally:
        del os.environ["DAGSTER_HOME"]
    assert len({s["partition"] for s in seg}) == 3
    for a, b in zip(seg, seg[1:], strict=False):
        assert b["start"] >= a["end"], f"inferences overlap: {a} and {b}"
    # the GPU steps (holding a slot of pool gpu: waiting at the lease with the input ready, then
    # inferring) do not hold back the other courses' CPU stages; the tiny model infers in about a
    # second, too short a window to test against the leases themselves
    cpu = [s for s in steps if s["step"] in CPU_STEPS]
    overlaps = [
        (c["partition"], c["step"], s["partition"])
        for c in cpu
        for s in seg_steps
        if c["partition"] != s["partition"] and c["start"] < s["end"] and s["start"] < c["end"]
    ]
    assert overlaps, "no CPU stage of one course ran during another course's segmentation"
