"""C-STORE into the drop, then the drop sensor's rules unchanged: marker, quiet period, run keys, duplicates."""

import json
import time

import pydicom

from rt_assets.constants import COURSE_JOB
from rt_assets.definitions import defs
from rt_assets.partitions import course_partitions
from rt_resources.ingest.index import COMPLETE_MARKER, RECEIVER_FOLDER, DropIndex
from rt_resources.ingest.survey import survey_drop
from tests.helpers import Ticker
from tests.receive.helpers import aborted, course_files, dicom_files, released, running, send


def _course_runs(ticker: Ticker, quiet_period_s: float) -> list:
    return ticker.course_runs(ticker.tick(quiet_period_s=quiet_period_s))


def test_sent_course_is_started_by_its_marker_and_materialized(tmp_path, drop, data_root, instance, resources):
    files = course_files(tmp_path / "tps")
    with running(drop) as receiver:
        assert set(send(receiver.port, files)) == {0x0000}
        assert released(receiver)
    (folder,) = [p for p in (drop / "TPS").iterdir()]
    assert (folder / COMPLETE_MARKER).is_file()
    assert len(dicom_files(folder)) == len(files)
    assert not dicom_files(drop / RECEIVER_FOLDER)  # staging is empty again

    # a quiet period of an hour: only the marker can start it, and it does, in this tick
    (run,) = _course_runs(Ticker(instance, drop, data_root), quiet_period_s=3600)
    key = run.partition_key
    assert key in instance.get_dynamic_partitions(course_partitions.name)
    assert run.run_key.startswith(f"{key}:")

    job = defs.resolve_job_def(COURSE_JOB)
    result = job.execute_in_process(partition_key=key, instance=instance, resources=resources, tags=run.tags)
    assert result.success
    course_dir = data_root / "courses" / key
    manifest = json.loads((course_dir / "manifest.json").read_text())
    assert {f["path"] for f in manifest["files"]} == {p.relative_to(drop).as_posix() for p in dicom_files(folder)}
    assert (course_dir / "ct.nii.gz").is_file() and (course_dir / "dvh_metrics.parquet").is_file()


def test_aborted_association_leaves_no_marker_and_starts_no_course(tmp_path, drop, data_root, instance):
    files = course_files(tmp_path / "tps")
    ct = [f for f in files if f.name.startswith("CT_")]
    with running(drop, stale_after_s=3600) as receiver:
        half = len(ct) // 2
        assert set(send(receiver.port, ct[:half], release=False)) == {0x0000}
        assert aborted(receiver)
        staged = dicom_files(drop / RECEIVER_FOLDER / "staging")
        assert len(staged) == half  # kept: nothing is lost
        assert not (drop / "TPS").exists()
        assert not list(drop.rglob(COMPLETE_MARKER))

        # even with no quiet period at all, the sensor sees nothing: staging is never indexed
        assert _course_runs(Ticker(instance, drop, data_root), quiet_period_s=0) == []
        assert instance.get_dynamic_partitions(course_partitions.name) == []
        assert DropIndex(data_root / "index", drop).load() == {}

        # once older than stale_after, it is reported (once), never deleted
        (reported,) = receiver.report_stale(now=time.time() + 2 * 3600)
        assert receiver.report_stale(now=time.time() + 3 * 3600) == []
        assert dicom_files(reported) == staged
    log = [json.loads(line) for line in (drop / RECEIVER_FOLDER / "receive_log.jsonl").read_text().splitlines()]
    (event,) = [e for e in log if e["event"] == "aborted"]
    assert event["stored"] == half and event["calling_ae"] == "TPS"
    (stale,) = [e for e in log if e["event"] == "stale"]
    assert stale["files"] == half and stale["staging"] == event["staging"]


def test_identical_resend_is_deduplicated_and_a_changed_one_follows_the_duplicate_rule(
    tmp_path, drop, data_root, instance
):
    files = course_files(tmp_path / "tps")
    ticker = Ticker(instance, drop, data_root)
    with running(drop) as receiver:
        send(receiver.port, files)
        assert released(receiver, 1)
        (first,) = _course_runs(ticker, quiet_period_s=3600)

        send(receiver.port, files)  # the same course again: a second folder, identical content
        assert released(receiver, 2)
        assert len(list((drop / "TPS").iterdir())) == 2
        assert _course_runs(ticker, quiet_period_s=3600) == []  # same content fingerprint: no new run
        survey = survey_drop(drop, data_root)
        assert [c.key for c in survey.courses] == [first.partition_key]
        assert sum("identical content" in r.reason for r in survey.links.rejections) == len(files)

        plan = next(f for f in files if f.name.startswith("RTPLAN"))
        ds = pydicom.dcmread(plan)
        ds.RTPlanLabel = "REPLAN"  # same SOP Instance UID, different content
        changed = tmp_path / "changed_plan.dcm"
        ds.save_as(changed, enforce_file_format=True)
        send(receiver.port, [changed])
        assert released(receiver, 3)
    survey = survey_drop(drop, data_root)
    conflicts = [r for r in survey.links.rejections if "different content" in r.reason]
    assert len(conflicts) == 3 and all(ds.SOPInstanceUID in r.reason for r in conflicts)
