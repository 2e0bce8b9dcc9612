"""The long-lived segmentation worker: same masks as TotalSegmentator's own API, the model loaded
once, and the faults (killed, hung, bad input) confined to the request that met them."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from rt_resources.segmentation.totalseg import (
    TotalSegSettings,
    labelmap_to_ct,
    prepare_input,
    run_totalsegmentator,
)
from rt_resources.segmentation.worker import (
    ModelSpec,
    WorkerError,
    infer,
    read_inference_log,
    socket_path,
    stop_worker,
)


def _ct(path: Path) -> Path:
    arr = np.full((40, 64, 64), -1000, np.int16)
    arr[5:35, 12:52, 8:56] = 40
    arr[10:30, 28:36, 20:30] = 700  # a "spine"
    ct = sitk.GetImageFromArray(arr)
    ct.SetSpacing((4.0, 4.0, 5.0))
    ct.SetOrigin((-128.0, -128.0, 0.0))
    sitk.WriteImage(ct, str(path))
    return path


@pytest.fixture(scope="module")
def tiny_totalseg_home(tmp_path_factory):
    from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model

    home = tmp_path_factory.mktemp("totalseg_home")
    build_tiny_totalseg_model(home, "total_fast")
    return home


@pytest.fixture
def state(tmp_path):
    yield tmp_path / "state"
    stop_worker(tmp_path / "state", "cpu")


def _prepared(tmp_path, settings) -> Path:
    ct = _ct(tmp_path / "ct.nii.gz")
    target = tmp_path / "course" / "segmentation" / "totalseg_input.nii.gz"
    prepare_input(ct, target, settings)
    return target


def test_worker_matches_totalsegmentator_api_and_keeps_the_model(tmp_path, state, tiny_totalseg_home):
    """The tiny nnU-Net model (official layout, random weights) through the worker gives the masks
    TotalSegmentator's Python API gives, voxel for voxel; the second request reuses the model."""
    settings = TotalSegSettings(home=tiny_totalseg_home, task="total", fast=True, device="cpu", threads=1)
    prepared = _prepared(tmp_path, settings)
    labels_path = prepared.with_name("totalseg_labels.nii.gz")
    first = infer(state, "cpu", settings.model_spec(), prepared, labels_path, idle_s=60)
    second = infer(state, "cpu", settings.model_spec(), prepared, labels_path, idle_s=60)
    assert first.load_s > 0 and second.load_s == 0.0 and first.worker_pid == second.worker_pid
    labels = labelmap_to_ct(labels_path, tmp_path / "ct.nii.gz", settings)

    from totalsegmentator.map_to_binary import class_map

    reference = run_totalsegmentator(tmp_path / "ct.nii.gz", tmp_path / "reference", settings)
    label_of = {name: label for label, name in class_map["total"].items()}
    assert len(reference.masks) == 117
    for name, path in reference.masks.items():
        expected = sitk.GetArrayFromImage(sitk.ReadImage(str(path))) > 0
        assert np.array_equal(expected, labels == label_of[name]), name
    log = read_inference_log(state)
    assert [r["load_s"] > 0 for r in log] == [True, False]


def _standin(seconds: float) -> ModelSpec:
    return ModelSpec(backend="standin", task="total", standin_seconds=seconds)


def test_killed_worker_fails_only_its_request_and_the_next_starts_fresh(tmp_path, state):
    settings = TotalSegSettings(home=tmp_path, backend="standin", device="cpu", threads=1)
    prepared = _prepared(tmp_path, settings)
    out = prepared.with_name("labels.nii.gz")
    errors: list[BaseException] = []

    def request():
        try:
            infer(state, "cpu", _standin(60.0), prepared, out, idle_s=60)
        except BaseException as exc:  # noqa: BLE001 -- handed to the test thread
            errors.append(exc)

    thread = threading.Thread(target=request)
    thread.start()
    pid_file = socket_path(state, "cpu").with_suffix(".pid")
    deadline = time.monotonic() + 60
    while not pid_file.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(2.0)  # the request is in the worker, sleeping as its "inference"
    killed = int(pid_file.read_text())
    os.kill(killed, signal.SIGKILL)
    thread.join(60)
    assert len(errors) == 1 and isinstance(errors[0], WorkerError)
    assert f"pid {killed}" in str(errors[0]) and "closed the connection" in str(errors[0])
    assert not out.exists()

    again = infer(state, "cpu", _standin(0.0), prepared, out, idle_s=60)
    assert again.worker_pid != killed and out.exists()


def test_hung_worker_is_killed_after_the_timeout(tmp_path, state):
    settings = TotalSegSettings(home=tmp_path, backend="standin", device="cpu", threads=1)
    prepared = _prepared(tmp_path, settings)
    start = time.monotonic()
    with pytest.raises(WorkerError, match="did not answer within 3 s"):
        infer(state, "cpu", _standin(120.0), prepared, prepared.with_name("labels.nii.gz"), timeout_s=3, idle_s=60)
    assert time.monotonic() - start < 60
    again = infer(state, "cpu", _standin(0.0), prepared, prepared.with_name("labels.nii.gz"), idle_s=60)
    assert again.inference_s < 60


def test_bad_input_is_an_answer_not_a_dead_worker(tmp_path, state):
    settings = TotalSegSettings(home=tmp_path, backend="standin", device="cpu", threads=1)
    prepared = _prepared(tmp_path, settings)
    bad = tmp_path / "course" / "segmentation" / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    first = infer(state, "cpu", _standin(0.0), prepared, prepared.with_name("a.nii.gz"), idle_s=60)
    with pytest.raises(WorkerError, match="broken.nii.gz|ITK|Unable"):
        infer(state, "cpu", _standin(0.0), bad, prepared.with_name("b.nii.gz"), idle_s=60)
    after = infer(state, "cpu", _standin(0.0), prepared, prepared.with_name("c.nii.gz"), idle_s=60)
    assert after.worker_pid == first.worker_pid


def test_idle_worker_exits(tmp_path, state):
    settings = TotalSegSettings(home=tmp_path, backend="standin", device="cpu", threads=1)
    prepared = _prepared(tmp_path, settings)
    done = infer(state, "cpu", _standin(0.0), prepared, prepared.with_name("a.nii.gz"), idle_s=2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not _gone(done.worker_pid):
        time.sleep(0.5)
    assert _gone(done.worker_pid) and not socket_path(state, "cpu").exists()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie until reaped by init: check its state
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().split()[2] == "Z"
