"""dicom_drop_sensor: quiet period, marker, content-fingerprinted run keys, bad files."""

import os
import time

import pydicom
import pytest
from dagster import build_sensor_context

from rt_assets.constants import COURSE_JOB
from rt_assets.definitions import defs
from rt_assets.partitions import course_partitions
from rt_assets.sensors.dicom_drop_sensor import dicom_drop_sensor
from rt_resources.ingest.index import DropIndex
from rt_resources.resources import DataRoot, DicomDrop
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL, Ticker, tree_digest


@pytest.fixture
def ticker(instance, drop, data_root):
    return Ticker(instance, drop, data_root)


def test_quiet_period_then_run_with_partition_in_same_tick(ticker, drop, instance):
    write_patient(drop, 0, SMALL)
    waiting = ticker.tick(quiet_period_s=3600)
    assert ticker.course_runs(waiting) == []
    assert instance.get_dynamic_partitions(course_partitions.name) == []

    started = ticker.tick(quiet_period_s=0)
    (req,) = ticker.course_runs(started)
    assert req.partition_key in [r.partition_keys[0] for r in started.dynamic_partitions_requests]
    assert req.run_key.startswith(req.partition_key + ":")
    assert req.tags["rt/course"] == req.partition_key
    # never a cohort run beside course runs still writing: cohort_sensor follows once they are done
    assert all(r.job_name == COURSE_JOB for r in started.run_requests)


def test_complete_marker_skips_the_wait(ticker, drop):
    write_patient(drop, 0, SMALL)
    write_patient(drop, 1, SMALL)
    (drop / "patient_001" / "_COMPLETE").write_text("")
    result = ticker.tick(quiet_period_s=3600)
    (req,) = ticker.course_runs(result)
    assert req.tags["rt/course"] in [r.partition_keys[0] for r in result.dynamic_partitions_requests]


def test_unchanged_drop_requests_nothing_and_parses_nothing(ticker, drop, data_root):
    write_patient(drop, 0, SMALL)
    first = ticker.tick()
    assert len(ticker.course_runs(first)) == 1
    again = ticker.tick()
    assert not again.run_requests and not again.dynamic_partitions_requests
    assert "0 parsed" in again.skip_reason.skip_message


def test_resent_unchanged_course_does_not_run_again(ticker, drop):
    write_patient(drop, 0, SMALL)
    ticker.tick()
    for f in drop.rglob("*.dcm"):
        f.write_bytes(f.read_bytes())  # re-sent: new mtimes, same content
    assert ticker.course_runs(ticker.tick()) == []


def test_resent_changed_course_runs_again(ticker, drop):
    write_patient(drop, 0, SMALL)
    (first,) = ticker.course_runs(ticker.tick())
    plan = next(drop.rglob("RTPLAN_primary.dcm"))
    ds = pydicom.dcmread(plan)
    ds.RTPlanLabel = "REPLAN"
    ds.save_as(plan, enforce_file_format=True)
    result = ticker.tick()
    (second,) = ticker.course_runs(result)
    assert second.partition_key == first.partition_key
    assert second.run_key != first.run_key
    assert not result.dynamic_partitions_requests  # partition exists already


def test_failed_tick_is_requested_again(ticker, drop):
    """A tick whose cursor Dagster never committed must not swallow its requests."""
    write_patient(drop, 0, SMALL)
    committed = ticker.cursor
    assert len(ticker.course_runs(ticker.tick())) == 1
    ticker.cursor = committed  # the daemon crashed before committing that tick
    assert len(ticker.course_runs(ticker.tick())) == 1


def test_bad_files_never_crash_the_sensor(ticker, drop, data_root):
    write_patient(drop, 0, SMALL)
    junk = drop / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("hello")
    (junk / "empty.dcm").write_bytes(b"")
    ct = sorted(drop.rglob("CT_0001.dcm"))[0].read_bytes()
    (junk / "truncated.dcm").write_bytes(ct[: len(ct) // 2])
    (junk / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)
    os.symlink("/nonexistent/target", junk / "dangling.dcm")
    orphan = write_patient(drop / "orphans", 5, SMALL)
    for f in orphan.courses[0].files:
        if f.modality in ("CT", "RTSTRUCT", "RTPLAN"):
            f.path.unlink()  # leaves a dose whose plan is missing
    before = tree_digest(drop)
    result = ticker.tick()
    assert len(ticker.course_runs(result)) == 1
    assert tree_digest(drop) == before
    entries = {e.path: e for e in DropIndex(data_root / "index", drop).load().values()}
    assert "junk/notes.txt" in entries and not entries["junk/notes.txt"].ok


def test_tick_over_unchanged_drop_is_fast(ticker, drop):
    for i in range(4):
        write_patient(drop, i, SMALL)
    ticker.tick()
    start = time.perf_counter()
    result = ticker.tick()
    assert "0 parsed" in result.skip_reason.skip_message
    assert time.perf_counter() - start < 5  # generous; the benchmark measures it properly


def test_no_drop_configured_is_a_skip(instance, data_root):
    ctx = build_sensor_context(
        instance=instance,
        resources={"data_root": DataRoot(path=str(data_root)), "dicom_drop": DicomDrop(path="")},
        definitions=defs,
    )
    result = dicom_drop_sensor(ctx)
    assert "RT_DROP_ROOT" in result.skip_message
