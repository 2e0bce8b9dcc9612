"""The shared process pool (rt_resources.parallel): order, retries, halving, and DVH through it."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd

from rt_resources.parallel import RetryPolicy, default_pool_workers, run_pool
from tests.pool_work import FailOn, RecordOrder, square


def test_results_equal_in_process_and_in_pool():
    items = list(range(7))
    pooled = run_pool(square, items, workers=2)
    inproc = run_pool(square, items, workers=2, sequential=True)
    assert pooled.results == inproc.results == {i: i * i for i in items}
    assert pooled.failures == {} and pooled.workers == 2


def test_costliest_item_starts_first(tmp_path):
    log = tmp_path / "order.txt"
    run_pool(RecordOrder(log), [1, 5, 3, 9, 2], workers=1, cost=float)
    assert [int(x) for x in log.read_text().split()] == [9, 5, 3, 2, 1]


def test_failure_recorded_and_killed_worker_halves_pool(tmp_path):
    work = FailOn(bad=3, kill=5, marker=tmp_path / "killed")
    out = run_pool(work, list(range(8)), workers=2, policy=RetryPolicy(attempts=3, backoff_s=0.01))
    assert (tmp_path / "killed").exists()
    assert set(out.failures) == {3}
    assert out.failures[3]["attempts"] == 3 and "ValueError: bad item 3" in out.failures[3]["error"]
    assert out.results == {i: -i for i in range(8) if i != 3}
    assert out.workers == 1 and "halving workers 2 -> 1" in out.events[0]


def test_default_workers_env(monkeypatch):
    monkeypatch.setenv("RT_POOL_WORKERS", "3")
    assert default_pool_workers() == 3
    monkeypatch.delenv("RT_POOL_WORKERS")
    assert default_pool_workers() >= 1


def test_course_dvh_in_pool_equals_in_process(tmp_path, monkeypatch):
    """DVH over many ROIs through the pool: the same table as in process."""
    import shutil

    import SimpleITK as sitk

    from rt_resources.dose.rtdose import read_rtdose
    from rt_resources.dvh import course as dvh_course
    from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
    from rt_resources.structures.masks import write_masks
    from rt_resources.structures.rtstruct import read_rois
    from rt_resources.synthetic import write_patient
    from tests.helpers import SMALL

    course = write_patient(tmp_path / "drop", 0, dataclasses.replace(SMALL)).courses[0]
    ct = read_ct_volume(validate_ct_series(sorted(f.path for f in course.files if f.modality == "CT")))
    rois = read_rois(next(f.path for f in course.files if f.modality == "RTSTRUCT"))
    masks = tmp_path / "masks"
    (masks / "manual").mkdir(parents=True)
    write_masks(rois, ct, masks / "manual")
    for copy in ("auto_a", "auto_b"):  # two more mask sources: enough ROIs for the pool
        shutil.copytree(masks / "manual", masks / copy)
    dose_path = tmp_path / "dose.nii.gz"
    sitk.WriteImage(read_rtdose(next(f.path for f in course.files if f.modality == "RTDOSE")).image, str(dose_path))
    monkeypatch.setattr(dvh_course, "MIN_ROIS_FOR_POOL", 4)
    args = dict(
        course_key="k",
        dose_path=dose_path,
        rois=rois,
        masks_root=masks,
        prescription_gy=60.0,
        single_plane_mm=SMALL.slice_mm,
    )
    m1, c1, n1 = dvh_course.course_dvh(**args, workers=1)
    m2, c2, n2 = dvh_course.course_dvh(**args, workers=2)
    assert len(m1) >= 3 * len([r for r in rois if not r.empty]) - 2
    pd.testing.assert_frame_equal(m1, m2)
    pd.testing.assert_frame_equal(c1, c2)
    assert n1 == n2
    assert json.loads(json.dumps(n1)) == n1
    assert set(m1["source"]) == {"manual", "auto_a", "auto_b"}
    assert m1.loc[m1["source"] == "manual", "method"].eq("contour").all()
    assert m1.loc[m1["source"] != "manual", "method"].eq("mask").all()


def test_children_stay_terminable_when_this_process_ignores_sigterm():
    """nnU-Net stops its pools with SIGTERM; an ignored SIGTERM would be inherited and hang them."""
    import multiprocessing
    import signal

    from rt_resources.parallel import terminable_children
    from tests.pool_work import square

    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        with terminable_children():
            ctx = multiprocessing.get_context("spawn")
            with ctx.Pool(3) as pool:  # without the fix this hangs in Pool.terminate (measured)
                assert pool.map(square, range(6)) == [0, 1, 4, 9, 16, 25]
            child = ctx.Process(target=square, args=(2,))
            child.start()
            child.terminate()  # SIGTERM reaches it
            child.join(timeout=30)
            assert child.exitcode is not None
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_batch_work_runs_niced_and_is_never_raised_back():
    """Radiomics extraction lowers its own CPU priority (children inherit it), so the stages that
    feed the GPU win under contention; calling it again changes nothing."""
    import subprocess
    import sys

    code = (
        "import os; from rt_resources.parallel import lower_cpu_priority, BATCH_NICE; "
        "start = os.nice(0); a = lower_cpu_priority(); b = lower_cpu_priority(); "
        "print(start, a, b, BATCH_NICE, os.nice(0))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    start, a, b, batch, now = map(int, out)
    assert a == b == now == max(start, batch) and batch == 10


def test_pool_workers_die_with_their_parent(tmp_path):
    """A pool worker does not outlive its parent killed with SIGKILL (a step killed mid-radiomics):
    PR_SET_PDEATHSIG ends it at once instead of minutes later."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    pid_file = tmp_path / "worker.pid"
    code = (
        "import os, time\n"
        "from rt_resources.parallel import run_pool\n"
        "from tests.pool_work import sleep_and_record_pid\n"
        "if __name__ == '__main__':\n"
        f"    run_pool(sleep_and_record_pid, [{str(pid_file)!r}], workers=1)\n"
    )
    script = tmp_path / "parent.py"
    script.write_text(code)
    root = str(Path(__file__).resolve().parents[1])
    parent = subprocess.Popen([sys.executable, str(script)], cwd=root, env={**os.environ, "PYTHONPATH": root})
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(pid_file.read_text())
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        stat = open(f"/proc/{worker}/stat").read()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"pool worker {worker} outlived its killed parent")
