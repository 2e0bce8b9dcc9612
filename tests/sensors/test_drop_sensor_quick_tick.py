"""dicom_drop_sensor over an unchanged drop: the tick ends after refreshing the index (no load, no
linking, no ledger write), unless a course is still waiting for its quiet period."""

import json
import os
import shutil

import pydicom
import pytest

from rt_resources.ingest import survey as survey_module
from rt_resources.ingest.index import DropIndex
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL, Ticker


@pytest.fixture
def ticker(instance, drop, data_root):
    return Ticker(instance, drop, data_root)


@pytest.fixture
def links(monkeypatch):
    """Counts full ticks (link_courses calls); ``links.forbid()`` makes a full tick fail."""

    class Links:
        calls = 0
        forbidden = False

        def forbid(self):
            self.forbidden = True

        def __call__(self, entries, secret):
            assert not self.forbidden, "the tick loaded and linked the drop"
            self.calls += 1
            return link_courses(entries, secret)

    link_courses = survey_module.link_courses
    counter = Links()
    monkeypatch.setattr(survey_module, "link_courses", counter)
    return counter


def forbid_loading(monkeypatch):
    def load(self):
        raise AssertionError("the tick loaded the index")

    monkeypatch.setattr(DropIndex, "load", load)


def test_unchanged_drop_short_circuits(ticker, drop, data_root, links, monkeypatch):
    for i in range(3):
        write_patient(drop, i, SMALL)
    first = ticker.tick()
    assert len(ticker.course_runs(first)) == 3 and links.calls == 1
    cursor = json.loads(ticker.cursor)
    assert cursor["waiting"] == 0 and cursor["index"]

    links.forbid()
    forbid_loading(monkeypatch)
    ledger = data_root / "index" / "sensor_requests.sqlite"
    ledger_before = ledger.stat().st_mtime_ns
    for _ in range(2):
        again = ticker.tick()
        assert not again.run_requests and not again.dynamic_partitions_requests
        assert "drop unchanged since the last tick: 45 files" in again.skip_reason.skip_message
        assert "0 parsed" in again.skip_reason.skip_message
        assert json.loads(ticker.cursor) == cursor  # kept
    assert ledger.stat().st_mtime_ns == ledger_before


def test_waiting_course_is_evaluated_until_ready(ticker, drop, links):
    write_patient(drop, 0, SMALL)
    waiting = ticker.tick(quiet_period_s=3600)
    assert ticker.course_runs(waiting) == [] and json.loads(ticker.cursor)["waiting"] == 1
    for _ in range(2):  # nothing changed, but a course waits: full ticks
        again = ticker.tick(quiet_period_s=3600)
        assert "1 waiting for quiet" in again.skip_reason.skip_message
    assert links.calls == 3
    (drop / "patient_000" / "_COMPLETE").write_text("")
    (run,) = ticker.course_runs(ticker.tick(quiet_period_s=3600))
    assert json.loads(ticker.cursor)["waiting"] == 0
    calls = links.calls
    assert "drop unchanged" in ticker.tick(quiet_period_s=3600).skip_reason.skip_message
    assert links.calls == calls


def test_files_added_later_are_requested(ticker, drop, links):
    write_patient(drop, 0, SMALL)
    (first,) = ticker.course_runs(ticker.tick())
    assert "drop unchanged" in ticker.tick().skip_reason.skip_message
    assert "drop unchanged" in ticker.tick().skip_reason.skip_message

    write_patient(drop, 1, SMALL)  # a new course
    (second,) = ticker.course_runs(ticker.tick())
    assert second.partition_key != first.partition_key
    assert "drop unchanged" in ticker.tick().skip_reason.skip_message

    plan = next((drop / "patient_000").rglob("RTPLAN_primary.dcm"))
    ds = pydicom.dcmread(plan)
    ds.RTPlanLabel = "REPLAN"
    ds.save_as(plan.with_suffix(".tmp"), enforce_file_format=True)
    os.replace(plan.with_suffix(".tmp"), plan)  # replaced by rename, as exports and the receiver do
    (third,) = ticker.course_runs(ticker.tick())
    assert third.partition_key == first.partition_key and third.run_key != first.run_key

    shutil.copytree(drop / "patient_000", drop / "copy_of_000")  # exact duplicates: no new run
    assert ticker.course_runs(ticker.tick()) == []
    assert "drop unchanged" in ticker.tick().skip_reason.skip_message


def test_cursor_of_an_earlier_version_gives_a_full_tick(ticker, drop, links):
    write_patient(drop, 0, SMALL)
    ticker.tick()
    ticker.cursor = json.dumps({"generation": json.loads(ticker.cursor)["generation"]})
    calls = links.calls
    result = ticker.tick()
    assert ticker.course_runs(result) == [] and links.calls == calls + 1
    assert "1 courses up to date" in result.skip_reason.skip_message
    assert "index" in json.loads(ticker.cursor)
    assert "drop unchanged" in ticker.tick().skip_reason.skip_message
