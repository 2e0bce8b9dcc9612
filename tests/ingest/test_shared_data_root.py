"""A data root shared by workers on several machines (README "Scale-out"): the machine-local state
folder, a drop mounted at another path, a worker without the data root, a worker whose drop index
does not know the course."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

from dagster import materialize

from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.partitions import course_partitions
from rt_assets.privacy import scrubber_for_course
from rt_resources.ingest.survey import survey_drop
from rt_resources.resources import DataRoot
from rt_resources.state import local_state_default, mount_fs_type, state_dir, worker_mounts
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL


def _mounts(tmp_path: Path, point: Path, kind: str) -> Path:
    mounts = tmp_path / "mounts"
    mounts.write_text(f"/dev/root / ext4 rw 0 0\nserver:/export {point} {kind} rw,vers=4.2 0 0\n")
    return mounts


def test_state_folder_is_local_when_the_data_root_is_on_nfs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data = tmp_path / "nfs" / "rt" / "data"
    nfs = _mounts(tmp_path, tmp_path / "nfs", "nfs4")
    assert mount_fs_type(data, nfs) == "nfs4"
    assert state_dir(data, "", nfs) == local_state_default(data)
    assert state_dir(data, "", nfs).is_relative_to(tmp_path / "home" / ".local" / "state" / "rtpipeline")
    local = _mounts(tmp_path, tmp_path / "elsewhere", "nfs4")
    assert state_dir(data, "", local) == data.resolve() / "index"  # a local disk: the layout of old
    assert state_dir(data, tmp_path / "mine", nfs) == (tmp_path / "mine").resolve()  # the setting wins


def _course(drop: Path, data_root: Path, instance) -> str:
    write_patient(drop, 0, SMALL)
    (key,) = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, [key])
    return key


def test_a_worker_mounting_the_drop_elsewhere_maps_it(drop, data_root, resources, instance, tmp_path, monkeypatch):
    key = _course(drop, data_root, instance)
    assert materialize([course_manifest, ct_image], partition_key=key, instance=instance, resources=resources).success
    ct = (data_root / "courses" / key / "ct.nii.gz").read_bytes()

    other = tmp_path / "mnt" / "drop"  # the same drop, as another machine mounts it
    other.parent.mkdir()
    shutil.move(drop, other)
    (data_root / "courses" / key / "ct.nii.gz").unlink()
    unmapped = materialize([ct_image], partition_key=key, instance=instance, resources=resources, raise_on_error=False)
    assert not unmapped.success
    failure = unmapped.get_step_failure_events()[0].event_specific_data.error.message
    # in Dagster the drop root is scrubbed (it may be a patient's folder); the local error log has it
    assert f"drop folder <drop> is not there on {socket.gethostname()}" in failure and "RT_DROP_ROOT" in failure
    logs = list((data_root / "logs" / "errors").glob("*ct_image*.log"))
    assert any(f"drop folder {drop.resolve()} is not there" in log.read_text() for log in logs)

    # this worker's own mount (never from the run config, which another machine wrote)
    monkeypatch.setenv("RT_WORKER_DROP_ROOT", str(other))
    worker_mounts.cache_clear()
    try:
        assert materialize([ct_image], partition_key=key, instance=instance, resources=resources).success
    finally:
        monkeypatch.delenv("RT_WORKER_DROP_ROOT")
        worker_mounts.cache_clear()
    assert (data_root / "courses" / key / "ct.nii.gz").read_bytes() == ct


def test_a_worker_without_the_data_root_fails_naming_it(drop, data_root, resources, instance, tmp_path):
    key = _course(drop, data_root, instance)
    missing = tmp_path / "not-mounted" / "data"
    result = materialize(
        [ct_image],
        partition_key=key,
        instance=instance,
        resources={**resources, "data_root": DataRoot(path=str(missing))},
        raise_on_error=False,
    )
    assert not result.success
    message = result.get_step_failure_events()[0].event_specific_data.error.message
    assert f"data root {missing} does not exist on {socket.gethostname()}" in message
    assert not missing.exists()


def test_identifiers_are_scrubbed_on_a_machine_whose_index_does_not_know_the_course(
    drop, data_root, resources, instance, tmp_path
):
    write_patient(drop, 0, SMALL, patient_id="SMITH-0042")
    (key,) = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, [key])
    assert materialize([course_manifest], partition_key=key, instance=instance, resources=resources).success
    elsewhere = DataRoot(path=str(data_root), state_dir=str(tmp_path / "another-machine-state"))
    scrubber = scrubber_for_course(elsewhere, key)
    assert "SMITH-0042" not in scrubber.text("reading SMITH-0042 failed")
