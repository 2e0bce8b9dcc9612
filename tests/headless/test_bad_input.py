"""What a user can get wrong around `rtpipeline run`, each with a clear message and nothing lost."""

import json
import os
import subprocess
import sys
import time

import pytest
from dagster import instance_for_test, materialize

from rt_assets.headless.daemon import QUEUE_DAEMON_TYPE, STATE_FILE, running_daemon
from rt_assets.headless.instance import DataRootLock
from rt_assets.run_launcher import worker_alive
from rt_resources.synthetic import write_patient
from tests.headless.helpers import cli_env, run_cli
from tests.helpers import SMALL, tree_digest


@pytest.fixture
def one_course(drop):
    write_patient(drop, 0, SMALL)
    return drop


def test_a_second_run_on_the_same_data_root_refuses(one_course, tmp_path):
    out = tmp_path / "out"
    with DataRootLock(out):  # another rtpipeline run holds the data root
        proc = run_cli("run", "--dicom-root", str(one_course), "--outdir", str(out))
    assert proc.returncode == 3, proc.stderr
    assert "another rtpipeline run is processing" in proc.stderr and f"pid {os.getpid()}" in proc.stderr
    assert not (out / "courses").exists()


def test_unusable_dagster_home(one_course, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = {**cli_env(), "DAGSTER_HOME": str(blocker / "home")}
    proc = run_cli("run", "--dicom-root", str(one_course), "--outdir", str(tmp_path / "out"), env=env)
    assert proc.returncode == 2 and "cannot be written" in proc.stderr and str(blocker) in proc.stderr


def test_usage_errors(one_course, tmp_path):
    out = str(tmp_path / "out")
    before = tree_digest(one_course)
    no_daemon = run_cli("run", "--dicom-root", str(one_course), "--outdir", out, "--no-wait")
    assert no_daemon.returncode == 2 and "--no-wait needs a Dagster daemon" in no_daemon.stderr
    key = run_cli("run", "--dicom-root", str(one_course), "--outdir", out, "--totalseg-license", "ABC-123")
    assert key.returncode == 2 and "--totalseg-license-env" in key.stderr and "ABC-123" not in key.stderr
    course = run_cli("run", "--dicom-root", str(one_course), "--outdir", out, "--course", "c-000000000000")
    assert course.returncode == 2 and "not a course of this drop" in course.stderr
    bad = tmp_path / "settings.yaml"
    bad.write_text("radiomics:\n  workers: -1\n")
    settings = run_cli("run", "--dicom-root", str(one_course), "--outdir", out, "--settings", str(bad))
    assert settings.returncode == 2 and str(bad) in settings.stderr and "radiomics.workers" in settings.stderr
    assert tree_digest(one_course) == before


def test_help_lists_exit_codes_defaults_and_choices():
    proc = run_cli("run", "--help")
    assert proc.returncode == 0
    for text in ("exit codes:", "130", "examples:", "--priority {size,fifo}", "pelvis", "--no-wait", "default:"):
        assert text in proc.stdout, text
    assert run_cli("--version").stdout.startswith("rtpipeline ")


def test_daemon_of_another_instance_does_not_count(tmp_path):
    from dagster._daemon.types import DaemonHeartbeat

    for name in "abc":
        (tmp_path / name).mkdir()
    with instance_for_test(temp_dir=str(tmp_path / "a")) as a, instance_for_test(temp_dir=str(tmp_path / "b")) as b:
        a.add_daemon_heartbeat(DaemonHeartbeat(time.time(), QUEUE_DAEMON_TYPE, "foreign-daemon", None))
        assert "a Dagster daemon" in running_daemon(a, tmp_path / "a")
        assert running_daemon(b, tmp_path / "b") is None  # a daemon for another instance: start our own
        # the last beat of an rtpipeline daemon whose process is gone (a killed CLI's) does not count
        (tmp_path / "b" / STATE_FILE).write_text(json.dumps({"pid": _dead_pid(), "daemon_id": "ours"}))
        b.add_daemon_heartbeat(DaemonHeartbeat(time.time(), QUEUE_DAEMON_TYPE, "ours", None))
        assert running_daemon(b, tmp_path / "b") is None
        (tmp_path / "b" / STATE_FILE).write_text(json.dumps({"pid": os.getpid(), "daemon_id": "ours"}))
        assert "rtpipeline's daemon" in running_daemon(b, tmp_path / "b")
        old = DaemonHeartbeat(time.time() - 600, QUEUE_DAEMON_TYPE, "stale", None)
        with instance_for_test(temp_dir=str(tmp_path / "c")) as c:
            c.add_daemon_heartbeat(old)
            assert running_daemon(c, tmp_path / "c") is None


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_worker_liveness_by_pid_and_start_time():
    assert worker_alive(os.getpid(), time.time())
    assert not worker_alive(_dead_pid(), time.time())
    assert not worker_alive(os.getpid(), time.time() - 10 * 24 * 3600)  # a pid reused since the event


def test_course_files_deleted_before_its_run(two_courses, drop, data_root, resources, instance):
    from rt_assets.assets.course.course_manifest import course_manifest
    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop

    keys = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, keys)
    assert materialize([course_manifest], partition_key=keys[0], instance=instance, resources=resources).success
    manifest = data_root / "courses" / keys[0] / "manifest.json"
    before = manifest.read_bytes()
    patient = json.loads(before)["files"][0]["path"].split("/")[0]
    import shutil

    shutil.rmtree(drop / patient)  # deleted between indexing and its run
    result = materialize(
        [course_manifest], partition_key=keys[0], instance=instance, resources=resources, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert keys[0] in message and "no longer in the drop" in message
    assert manifest.read_bytes() == before  # what was materialized is kept
    assert materialize([course_manifest], partition_key=keys[1], instance=instance, resources=resources).success


def test_drop_changing_while_the_run_is_in_flight(two_courses, drop, data_root, resources, instance):
    """The run records the course as it is when it reads it, and says the content moved on since the
    request; the next plan compares with what was recorded, so it neither misses nor repeats work."""
    from rt_assets.assets.course.course_manifest import course_manifest
    from rt_assets.partitions import course_partitions
    from rt_resources.ingest.survey import survey_drop

    course = survey_drop(drop, data_root).courses[0]
    instance.add_dynamic_partitions(course_partitions.name, [course.key])
    requested = course.fingerprint
    extra = next(f for f in course.files if f.header.kind == "RTPLAN")  # a re-export lands: one file changes
    import pydicom

    ds = pydicom.dcmread(drop / extra.path)
    ds.RTPlanDescription = "re-exported"
    ds.save_as(drop / extra.path)
    result = materialize(
        [course_manifest],
        partition_key=course.key,
        instance=instance,
        resources=resources,
        tags={"rt/fingerprint": requested[:16]},
    )
    assert result.success
    warnings = [
        e.message
        for e in instance.all_logs(result.run_id)
        if "changed since the run was requested" in (e.message or "")
    ]
    assert warnings
    now = survey_drop(drop, data_root).courses[0].fingerprint
    assert now != requested
    meta = result.asset_materializations_for_node("course_manifest")[0].metadata
    assert meta["fingerprint"].value == now  # what the outputs are built from
