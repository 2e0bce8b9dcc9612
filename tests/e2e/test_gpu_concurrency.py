"""The GPU invariant, checked with the real daemon: three courses dropped (the third while a
segmentation runs); no two inferences overlap in time (the device leases the inference steps
recorded), while the third course's CPU stages run inside another course's segmentation step (the
test holds the device meanwhile, as another GPU user would, so the window exists on any machine).
Segmentation runs
are tagged rt/gpu=true and hold the inference step only; dagster.yaml lets one more wait at the
device lease with its input ready (pool `gpu` and the rt/gpu run limit at 2)."""

import shutil
import time
from pathlib import Path

import pytest
from dagster import DagsterEventType

from rt_assets.headless.instance import open_instance
from rt_assets.partitions import course_partitions
from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
from rt_resources.synthetic import write_patient
from tests.e2e.dagster_dev import MATERIALIZATIONS, graphql, start_dagster_dev
from tests.headless.helpers import held_device, inference_intervals, step_started
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


def courses(home: Path) -> set[str]:
    with open_instance(home) as instance:
        return set(instance.get_dynamic_partitions(course_partitions.name))


def inference_started(home: Path) -> bool:
    """Whether an inference step has started (it then waits at the device lease)."""
    with open_instance(home) as instance:
        return bool(step_started(instance, SEG_STEP))


def cpu_done(port: int, partition: str) -> bool:
    """Whether a course's CPU stages up to the segmentation input are materialized."""
    for asset in ("ct_image", "structure_masks", "totalseg_input"):
        mats = graphql(port, MATERIALIZATIONS % asset)["assetOrError"].get("assetMaterializations", [])
        if partition not in {m["partition"] for m in mats}:
            return False
    return True


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
        # The test holds every slot of the device, as another process using the GPU would: the first
        # segmentations wait at the lease, so the window in which the third course's CPU stages must
        # run is made, not hoped for (CI once ran everything so fast that no overlap happened).
        with held_device(data / "index"):
            for folder in (first, second):
                shutil.move(str(folder), drop / folder.name)
            deadline = time.time() + 600
            while time.time() < deadline and not inference_started(home):
                time.sleep(1)
            assert inference_started(home), log.read_text()[-8000:]
            before = courses(home)
            # the third course arrives while a segmentation step is in progress
            shutil.move(str(third), drop / third.name)
            while time.time() < deadline and not (courses(home) - before):
                time.sleep(1)
            new = courses(home) - before
            assert len(new) == 1, (new, log.read_text()[-8000:])
            (late,) = new
            while time.time() < deadline and not cpu_done(port, late):
                time.sleep(2)
            assert cpu_done(port, late), log.read_text()[-8000:]

        segmented: set[str] = set()
        while time.time() < deadline and len(segmented) < 3:
            mats = graphql(port, MATERIALIZATIONS % SEG_STEP)["assetOrError"].get("assetMaterializations", [])
            segmented = {m["partition"] for m in mats}
            time.sleep(3)
        assert len(segmented) == 3, log.read_text()[-8000:]

        with open_instance(home) as instance:
            while time.time() < deadline and any(not r.is_finished for r in instance.get_runs()):
                time.sleep(2)
            steps = step_intervals(instance)

    seg_steps = [s for s in steps if s["step"] == SEG_STEP]
    assert all(s["tags"].get("rt/gpu") == "true" for s in seg_steps)  # runs that segment carry the GPU tag
    with open_instance(home) as instance:
        seg = inference_intervals(instance)  # the device leases of the inference steps
    assert len({s["partition"] for s in seg}) == 3
    for a, b in zip(seg, seg[1:], strict=False):
        assert b["start"] >= a["end"], f"inferences overlap: {a} and {b}"
    # the GPU steps (holding a slot of pool gpu: waiting at the lease with the input ready, then
    # inferring) do not hold back the other courses' CPU stages: the third course's ran while the
    # test held the device, so inside a segmentation step of another course
    cpu = [s for s in steps if s["step"] in CPU_STEPS]
    overlaps = [
        (c["partition"], c["step"], s["partition"])
        for c in cpu
        for s in seg_steps
        if c["partition"] != s["partition"] and c["start"] < s["end"] and s["start"] < c["end"]
    ]
    assert any(p == late for p, _, _ in overlaps), (
        f"no CPU stage of the third course ran during another course's segmentation: {overlaps}"
    )
