"""dicom_drop_sensor over an unchanged drop: the tick ends after refreshing the index (no load, no
linking, no ledger write), unless a course is still waiting for its quiet period."""

import json
import os
import shutil

import pydicom
import pytest

from rt_resources.ingest import link_state
from rt_resources.ingest.index import DropIndex
from rt_resources.ingest.link_state import LinkStore
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL, Ticker


@pytest.fixture
def ticker(instance, drop, data_root):
    return Ticker(instance, drop, data_root)


@pytest.fixture
def links(monkeypatch):
    """Counts what ticks link and load: ``calls`` (link_courses calls, each over one part of the
    drop), ``linked`` (files linked), ``loaded`` (courses read from the link store);
    ``links.forbid()`` makes any linking or course loading fail."""

    class Links:
        calls = linked = loaded = 0
        forbidden = False

        def forbid(self):
            self.forbidden = True

        def __call__(self, entries, secret):
            assert not self.forbidden, "the tick linked files again"
            self.calls += 1
            self.linked += len(entries)
            return link_courses(entries, secret)

    link_courses = link_state.link_courses
    read_courses = LinkStore.courses
    counter = Links()

    def courses(store, keys=None):
        assert not counter.forbidden, "the tick loaded courses"
        found = read_courses(store, keys)
        counter.loaded += len(found)
        return found

    monkeypatch.setattr(link_state, "link_courses", counter)
    monkeypatch.setattr(LinkStore, "courses", courses)
    return counter


def forbid_loading(monkeypatch):
    def load(self):
        raise AssertionError("the tick loaded the index")

    monkeypatch.setattr(DropIndex, "load", load)


def test_unchanged_drop_short_circuits(ticker, drop, data_root, links, monkeypatch):
    for i in range(3):
        write_patient(drop, i, SMALL)
    first = ticker.tick()
    assert len(ticker.course_runs(first)) == 3 and links.linked == 45
    cursor = json.loads(ticker.cursor)
    assert cursor["waiting"] == [] and cursor["index"] and cursor["links"]

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
    (key,) = json.loads(ticker.cursor)["waiting"]
    assert ticker.course_runs(waiting) == [] and links.calls == 1 and links.loaded == 1
    for _ in range(2):  # nothing changed, but a course waits: it is looked at again, not linked again
        again = ticker.tick(quiet_period_s=3600)
        assert "1 waiting for quiet" in again.skip_reason.skip_message
    assert links.calls == 1 and links.loaded == 3
    (drop / "patient_000" / "_COMPLETE").write_text("")
    (run,) = ticker.course_runs(ticker.tick(quiet_period_s=3600))
    assert run.partition_key == key and json.loads(ticker.cursor)["waiting"] == []
    links.forbid()
    assert "drop unchanged" in ticker.tick(quiet_period_s=3600).skip_reason.skip_message


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
    assert ticker.course_runs(result) == [] and links.calls == calls  # looked at, not linked again
    assert "courses looked at: every course; 1 up to date" in result.skip_reason.skip_message
    assert "links" in json.loads(ticker.cursor)
    assert "drop unchanged" in ticker.tick().skip_reason.skip_message


def test_a_tick_after_a_new_course_links_and_loads_only_that_course(ticker, drop, links):
    for i in range(4):
        write_patient(drop, i, SMALL)
    assert len(ticker.course_runs(ticker.tick())) == 4
    calls, linked, loaded = links.calls, links.linked, links.loaded
    write_patient(drop, 4, SMALL)
    (run,) = ticker.course_runs(ticker.tick())
    assert links.linked - linked == 15 and links.calls - calls == 1  # the new course's files only
    assert links.loaded - loaded == 1

    shutil.copy(next((drop / "patient_001").rglob("CT_0003.dcm")), drop / "patient_004" / "copy.dcm")
    linked, loaded = links.linked, links.loaded
    result = ticker.tick()  # an identical copy: a rejection more, no course linked again or loaded
    assert ticker.course_runs(result) == [] and links.linked == linked and links.loaded == loaded
    assert "courses looked at: 0 changed or waiting" in result.skip_reason.skip_message


def test_a_tick_whose_cursor_was_not_committed_requests_nothing_for_good(ticker, drop):
    """Found by a review: the lost tick's ledger rows shared the next tick's generation, so that
    tick's commit confirmed them: a course requested only by the lost tick, and waiting in the
    next one, was never requested."""
    write_patient(drop, 0, SMALL)
    ticker.tick(quiet_period_s=3600)  # waiting
    committed = ticker.cursor
    (lost,) = ticker.course_runs(ticker.tick(quiet_period_s=0))
    ticker.cursor = committed  # the daemon never stored that tick's result
    junk = next(drop.rglob("CT_0001.dcm")).parent / "partial.dcm"
    junk.write_bytes(b"DICM" + bytes(20))  # a slice still being copied: the course waits again
    assert ticker.course_runs(ticker.tick(quiet_period_s=3600)) == []
    junk.unlink()
    (run,) = ticker.course_runs(ticker.tick(quiet_period_s=0))
    assert run.run_key == lost.run_key
