"""GPU leases (rt_resources/gpu_leases.py) and the pool `gpu` (rt_assets/gpu_pool.py), on CPU
with simulated devices: real flock locks, real processes, a real Dagster instance running the
real totalseg_inference step (its worker replaced) for two courses at once."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rt_resources.gpu_leases import (
    CUDA_VISIBLE,
    DeviceLease,
    GpuConfig,
    GpuConfigError,
    GpuSlots,
    LeaseTimeout,
    gpu_slots,
)
from rt_resources.settings import GpuSettings

REPO = Path(__file__).resolve().parents[2]


def slots(devices=("0", "1"), per_device=1) -> GpuSlots:
    return GpuSlots(tuple(devices), per_device)


def child(function: str, *args: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """A Python process running ``function(*args)`` of this module."""
    code = f"import sys; from tests.segmentation.test_gpu_leases import {function} as f; f(*sys.argv[1:])"
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, **(env or {})}, **kwargs)


# ---------------------------------------------------------------------------------------- slots


def test_slots_from_settings():
    assert gpu_slots(GpuSettings(devices=["0", "1"], per_device=2), detected=0, environ={}).count == 4
    assert gpu_slots(GpuSettings(devices=["cuda:1", "1", "gpu:2"]), detected=3, environ={}).devices == ("1", "2")
    auto = gpu_slots(GpuSettings(), detected=3, environ={})
    assert auto.devices == ("0", "1", "2") and auto.count == 3 and auto.ordinal("2") == 2
    none = gpu_slots(GpuSettings(per_device=2), detected=0, environ={})  # no CUDA: one device, serialised
    assert none.devices == ("0",) and none.count == 2
    # a process pinned to one device (a Celery GPU worker) leases that device, which is its index 0
    pinned = gpu_slots(GpuSettings(devices=["0", "1"]), detected=1, environ={CUDA_VISIBLE: "1"})
    assert pinned.devices == ("1",) and pinned.ordinal("1") == 0
    visible = gpu_slots(GpuSettings(devices=["3"]), detected=2, environ={CUDA_VISIBLE: "2,3"})
    assert visible.devices == ("3",) and visible.ordinal("3") == 1
    assert gpu_slots(GpuSettings(), detected=2, environ={CUDA_VISIBLE: "2,3"}).devices == ("2", "3")
    with pytest.raises(GpuConfigError, match="hides"):
        gpu_slots(GpuSettings(devices=["0"]), detected=2, environ={CUDA_VISIBLE: "2,3"})


def test_gpu_settings_become_the_gpu_resource():
    from rt_resources.resources import resources_from_settings, run_config
    from rt_resources.settings import load_settings

    settings = load_settings(environ={"RT_GPU_DEVICES": "0,1", "RT_SEGMENTATIONS_PER_GPU": "2"})
    gpu = resources_from_settings(settings)["gpu"]
    assert isinstance(gpu, GpuConfig) and gpu.devices == ["0", "1"] and gpu.per_device == 2
    assert gpu.slots(detected=0).count == 4
    assert run_config(settings)["resources"]["gpu"]["config"] == {"devices": ["0", "1"], "per_device": 2}
    assert not hasattr(gpu, "output_config")  # the device does not change the masks


def test_step_reads_run_config_then_settings(monkeypatch):
    from types import SimpleNamespace

    from rt_assets import config as rt_config
    from rt_assets.gpu_pool import step_gpu_config
    from rt_resources.settings import load_settings

    run = SimpleNamespace(run_config={"resources": {"gpu": {"config": {"devices": ["0", "1"], "per_device": 3}}}})
    assert step_gpu_config(SimpleNamespace(resources=None, run=run)).per_device == 3
    monkeypatch.setattr(rt_config, "_settings", load_settings(environ={"RT_GPU_DEVICES": "4,5"}))
    fallback = step_gpu_config(SimpleNamespace(resources=None, run=SimpleNamespace(run_config={})))
    assert fallback.devices == ["4", "5"]


# ---------------------------------------------------------------------------------------- leases


def test_least_loaded_device_first(tmp_path):
    held = []
    for _ in range(4):
        held.append(DeviceLease(slots(per_device=2), tmp_path).acquire())
    assert [(lease.device, lease.slot) for lease in held] == [("0", 0), ("1", 0), ("0", 1), ("1", 1)]
    assert not DeviceLease(slots(per_device=2), tmp_path).try_acquire()
    held[1].release()  # device 1 has a free slot again: the next lease goes there
    nxt = DeviceLease(slots(per_device=2), tmp_path).acquire()
    assert (nxt.device, nxt.slot) == ("1", 0)
    for lease in [*held, nxt]:
        lease.release()


def test_two_concurrent_threads_get_different_devices(tmp_path):
    barrier, got, errors = threading.Barrier(2), [], []

    def work():
        try:
            barrier.wait()
            with DeviceLease(slots(), tmp_path, timeout_s=5) as lease:
                got.append(lease.device)
                barrier.wait()  # both hold their lease here
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors and sorted(got) == ["0", "1"]


def test_per_device_two_share_one_device_and_a_third_waits(tmp_path):
    one = slots(devices=("0",), per_device=2)
    first, second = DeviceLease(one, tmp_path).acquire(), DeviceLease(one, tmp_path).acquire()
    assert (first.device, second.device) == ("0", "0") and {first.slot, second.slot} == {0, 1}
    with pytest.raises(LeaseTimeout, match=str(tmp_path)):
        DeviceLease(one, tmp_path, timeout_s=0.3, poll_s=0.05).acquire()
    waits = []
    third = DeviceLease(one, tmp_path, timeout_s=20, poll_s=0.05, on_wait=waits.append)
    thread = threading.Thread(target=third.acquire)
    thread.start()
    time.sleep(0.5)
    assert thread.is_alive() and third.device is None and waits and str(tmp_path) in waits[0]
    released = time.time()
    second.release()
    thread.join(10)
    assert third.device == "0" and third.slot == second.slot and third.acquired_at >= released
    assert third.waited_s >= 0.4
    for lease in (first, third):
        lease.release()


def hold_lease(lock_dir: str, devices: str, out: str, hold_s: str, fork: str = "") -> None:
    """Child: lease one of ``devices``, report it in ``out``, hold it until ``<out>.release``
    appears (``hold_s`` seconds at most); with ``fork``, fork a sleeping child first (a library's
    worker that outlives the step)."""
    release, deadline = Path(out).with_suffix(".release"), time.time() + float(hold_s)
    with DeviceLease(GpuSlots(tuple(devices.split(","))), lock_dir, timeout_s=60, poll_s=0.05) as lease:
        forked = os.fork() if fork else None
        if forked == 0:
            time.sleep(float(hold_s))
            os._exit(0)
        Path(out).write_text(json.dumps({"device": lease.device, "pid": os.getpid(), "forked": forked}))
        while not release.exists() and time.time() < deadline:
            time.sleep(0.05)


def _wait_for(path: Path, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while not path.exists() or not path.read_text():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)
    return json.loads(path.read_text())


def test_two_processes_get_different_devices(tmp_path):
    outs = [tmp_path / f"p{i}.json" for i in range(2)]
    procs = [child("hold_lease", str(tmp_path / "locks"), "0,1", str(out), "120") for out in outs]
    try:
        first, second = (_wait_for(out) for out in outs)  # both hold their lease now
        assert {first["device"], second["device"]} == {"0", "1"}
    finally:
        for out in outs:
            out.with_suffix(".release").write_text("")
        for p in procs:
            p.wait(60)
    assert all(p.returncode == 0 for p in procs)


def test_sigkill_frees_the_device_even_with_a_forked_child_alive(tmp_path):
    lock_dir, out = tmp_path / "locks", tmp_path / "held.json"
    proc = child("hold_lease", str(lock_dir), "0", str(out), "600", "fork")
    forked = None
    try:
        held = _wait_for(out)
        forked = held["forked"]
        assert held["device"] == "0" and forked
        assert not DeviceLease(slots(devices=("0",)), lock_dir).try_acquire()  # held by the child
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(30) == -signal.SIGKILL
        with DeviceLease(slots(devices=("0",)), lock_dir, timeout_s=5, poll_s=0.05) as lease:
            assert lease.device == "0" and lease.waited_s < 2
        os.kill(forked, 0)  # the forked child still runs: it did not keep the lease
    finally:
        if proc.poll() is None:
            proc.kill()
        if forked:
            with contextlib.suppress(ProcessLookupError):
                os.kill(forked, signal.SIGKILL)


# ---------------------------------------------------------------------------------------- pool


def _instance_settings(rt_gpu_limit: int) -> dict:
    return {
        "concurrency": {
            "pools": {"default_limit": 1, "granularity": "op"},
            "runs": {
                "max_concurrent_runs": 4,
                "tag_concurrency_limits": [{"key": "rt/gpu", "value": "true", "limit": rt_gpu_limit}],
            },
        }
    }


def test_ensure_gpu_pool_sets_the_limit_and_warns_about_the_run_limit(monkeypatch):
    from dagster import instance_for_test

    from rt_assets.gpu_pool import ensure_gpu_pool, gpu_run_limit

    with instance_for_test(overrides=_instance_settings(1)) as instance:
        assert gpu_run_limit(instance) == 1
        warning = ensure_gpu_pool(instance, 2)
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2
        assert warning and "rt/gpu" in warning and "tag_concurrency_limits" in warning and "to 2" in warning
        calls = []
        storage = instance.event_log_storage
        monkeypatch.setattr(storage, "set_concurrency_slots", lambda *a: calls.append(a))
        ensure_gpu_pool(instance, 2)
        assert calls == []  # unchanged: not set again
        assert ensure_gpu_pool(instance, 1) is None and calls == [("gpu", 1)]
    with instance_for_test(overrides=_instance_settings(2)) as instance:
        assert ensure_gpu_pool(instance, 2) is None
        assert instance.event_log_storage.get_concurrency_info("gpu").limit == 2


# ---------------------------------------------------------------------------------------- Dagster

HOLD_S = 3.0  #: the stand-in engine's run time: long enough for the two steps to overlap


def segment_child(workdir: str, key: str) -> None:
    """Child: materialize totalseg_inference of course ``key`` against the test's instance, once per
    scenario of ``workdir/spec.json``, each when that scenario's go-file appears.

    The step is the real one (course paths, lease, metadata) with TotalSegmentator set to device
    gpu; only the segmentation worker is replaced, by a stand-in that checks the CUDA device it is
    given and thresholds the prepared input: no CUDA here."""
    from dagster import DagsterInstance, materialize
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import deserialize_value

    import rt_assets.assets.segmentation.totalseg_inference as module
    from rt_resources.resources import DataRoot, TotalSegmentator
    from rt_resources.segmentation.worker import Inference

    work = Path(workdir)
    spec = json.loads((work / "spec.json").read_text())

    def engine(state_dir, device, model, input_path, output_path, **kwargs):  # called inside the step's lease
        import SimpleITK as sitk

        assert device.startswith("cuda:") and model.backend == "totalsegmentator"
        start = time.time()
        sitk.WriteImage(sitk.Cast(sitk.ReadImage(str(input_path)) > 0, sitk.sitkUInt8), str(output_path), True)
        time.sleep(HOLD_S)
        return Inference(Path(output_path), time.time() - start, 0.0, start, time.time(), os.getpid(), device)

    module.infer = engine
    instance = DagsterInstance.from_ref(deserialize_value((work / "instance_ref.json").read_text(), InstanceRef))
    resources = {
        "data_root": DataRoot(path=spec["data_root"]),
        "totalsegmentator": TotalSegmentator(home=spec["home"], device="gpu", fast=True, threads=1),
        "gpu": GpuConfig(),
    }
    for name, gpu in spec["scenarios"].items():
        (work / f"ready-{name}-{key}").write_text("")
        _wait_for_file(work / f"go-{name}")
        result = materialize(
            [module.totalseg_inference],
            partition_key=key,
            instance=instance,
            resources=resources,
            run_config={"resources": {"gpu": {"config": gpu}}},  # as rtpipeline run submits the settings
            tags={"scenario": name},
        )
        assert result.success


def _wait_for_file(path: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _leases(instance, scenario: str) -> list[dict]:
    """The device metadata of the scenario's totalseg_inference materializations, by lease start."""
    from dagster import AssetKey

    out = []
    for record in instance.fetch_materializations(AssetKey("totalseg_inference"), limit=20).records:
        if instance.get_run_by_id(record.run_id).tags.get("scenario") == scenario:
            metadata = record.asset_materialization.metadata
            out.append({**metadata["device_lease"].value, "device_meta": metadata["device"].value})
    return sorted(out, key=lambda r: r["acquired"])


def _overlap(a: dict, b: dict) -> bool:
    return a["acquired"] < b["released"] and b["acquired"] < a["released"]


def test_two_courses_segment_at_once_on_two_simulated_devices(tmp_path, drop, data_root, resources):
    """Two course partitions' totalseg_inference steps in two processes against one instance: with two
    devices (pool `gpu` set to 2 by ensure_gpu_pool) they run at once, on different devices; with
    one device (the pool left at 2) the leases alone serialise them."""
    from dagster import instance_for_test, materialize
    from dagster._serdes import serialize_value

    from rt_assets.assets.course.course_manifest import course_manifest
    from rt_assets.assets.course.ct_image import ct_image
    from rt_assets.assets.course.totalseg_input import totalseg_input
    from rt_assets.gpu_pool import ensure_gpu_pool
    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop
    from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
    from rt_resources.synthetic import write_patient
    from tests.helpers import SMALL

    home = tmp_path / "totalseg_home"
    build_tiny_totalseg_model(home, "total_fast")  # the step checks the weights are there
    for i in range(2):
        write_patient(drop, i, SMALL)
    keys = sorted(c.key for c in survey_drop(drop, data_root).courses)
    assert len(keys) == 2
    work = tmp_path / "work"
    work.mkdir()
    scenarios = {"two": {"devices": ["0", "1"], "per_device": 1}, "one": {"devices": ["0"], "per_device": 1}}
    spec = {"data_root": str(data_root), "home": str(home), "scenarios": scenarios}
    (work / "spec.json").write_text(json.dumps(spec))
    with instance_for_test(overrides=_instance_settings(1)) as instance:
        (work / "instance_ref.json").write_text(serialize_value(instance.get_ref()))
        procs = [child("segment_child", str(work), key) for key in keys]  # they import meanwhile
        try:
            instance.add_dynamic_partitions(course_partitions.name, keys)
            for key in keys:
                course = [course_manifest, ct_image, totalseg_input]
                assert materialize(course, partition_key=key, instance=instance, resources=resources).success
            warning = ensure_gpu_pool(instance, GpuConfig(**scenarios["two"]).slots().count)
            assert warning and "rt/gpu" in warning  # dagster.yaml's run limit of 1 would hold one back
            assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2
            for name in scenarios:
                for key in keys:
                    _wait_for_file(work / f"ready-{name}-{key}", timeout=180)
                (work / f"go-{name}").write_text("")
            for p in procs:
                assert p.wait(300) == 0
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()

        two = _leases(instance, "two")
        assert len(two) == 2 and {r["device_meta"] for r in two} == {"cuda:0", "cuda:1"}
        assert _overlap(*two), f"the two segmentations did not run at once: {two}"
        assert {r["device"] for r in two} == {"0", "1"}  # overlapping leases never share a device

        one = _leases(instance, "one")
        assert len(one) == 2 and {r["device"] for r in one} == {"0"}
        assert {r["device_meta"] for r in one} == {"cuda:0"}
        assert not _overlap(*one), f"two segmentations on one device at once: {one}"
        assert one[1]["waited_s"] > 1.0  # the second step waited for the first one's lease


def test_radiomics_in_the_gpu_pool_leases_a_device(tmp_path, drop, data_root, resources, instance):
    """With fastrad on CUDA the radiomics step is in the pool `gpu`: it leases a device too (here
    pyradiomics on the CPU, so the lease serialises it on device 0 and says so)."""
    from dagster import AssetKey, materialize

    from rt_assets.assets.course.course_manifest import course_manifest
    from rt_assets.assets.course.ct_image import ct_image
    from rt_assets.assets.course.radiomics import radiomics_asset
    from rt_assets.assets.course.structure_masks import structure_masks
    from rt_assets.constants import GPU_POOL
    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop
    from rt_resources.resources import DataRoot
    from rt_resources.synthetic import write_patient
    from tests.helpers import SMALL

    write_patient(drop, 0, SMALL)
    (key,) = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, [key])
    course = [course_manifest, ct_image, structure_masks]
    assert materialize(course, partition_key=key, instance=instance, resources=resources).success
    gpu_radiomics = radiomics_asset(GPU_POOL)
    assert gpu_radiomics.op.pool == GPU_POOL
    run_config = {"resources": {"gpu": {"config": {"devices": ["0"], "per_device": 1}}}}
    res = {**resources, "gpu": GpuConfig()}
    result = materialize([gpu_radiomics], partition_key=key, instance=instance, resources=res, run_config=run_config)
    assert result.success
    metadata = instance.fetch_materializations(AssetKey("radiomics"), limit=1).records[0].asset_materialization.metadata
    lease = metadata["device_lease"].value
    assert metadata["device"].value == "cpu" and lease["device"] == "0" and lease["slot"] == 0
    assert lease["ran_on"] == "cpu (slot 0 of device 0)" and lease["released"] >= lease["acquired"]
    # released: the next lease gets the device at once
    state = DataRoot(path=str(data_root)).state()
    with GpuConfig(devices=["0"]).lease(state) as again:
        assert again.device == "0" and again.waited_s < 1
