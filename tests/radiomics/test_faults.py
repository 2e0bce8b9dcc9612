"""Resilient pool: killed workers, MemoryError and persistent failures."""

from __future__ import annotations

import logging
import time

import pytest

from rt_resources.radiomics import RadiomicsSettings, run_tasks, select_tasks
from tests.radiomics.faults import AlwaysFail, FaultOnce

ROIS = ["ROI_A", "ROI_B", "Box GTV"]  # file order: ROI_A, ROI_B, box


@pytest.fixture
def setup(synth, caplog):
    caplog.set_level(logging.INFO, logger="rtpipeline.radiomics")
    settings = RadiomicsSettings(params=synth["params"], light_params=None, backoff_s=0.05)
    tasks, _ = select_tasks(synth["masks"], settings)
    return synth["image"], tasks, settings


@pytest.mark.parametrize("kind", ["kill", "memory"])
def test_fault_on_first_attempt_halves_workers_and_finishes(setup, tmp_path, caplog, kind):
    image, tasks, settings = setup
    roi = "ROI_A" if kind == "kill" else "ROI_B"
    results, failures = run_tasks(image, tasks, settings, workers=2, fault_hook=FaultOnce(roi, tmp_path, kind))
    assert failures == []
    assert [r["roi_name"] for r in results] == ROIS
    assert (tmp_path / f"{kind}-{roi}").exists()  # the fault really fired
    assert "halving workers 2 -> 1" in caplog.text
    assert ("a worker process died" if kind == "kill" else "MemoryError") in caplog.text


def test_hung_task_times_out_and_is_retried(synth, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="rtpipeline.radiomics")
    settings = RadiomicsSettings(params=synth["params"], light_params=None, backoff_s=0.05, timeout_s=3)
    tasks, _ = select_tasks(synth["masks"], settings)
    start = time.monotonic()
    hook = FaultOnce("ROI_B", tmp_path, "hang")
    results, failures = run_tasks(synth["image"], tasks, settings, workers=2, fault_hook=hook)
    assert failures == [] and [r["roi_name"] for r in results] == ROIS
    assert "a task timed out; halving workers 2 -> 1" in caplog.text
    assert time.monotonic() - start < 30  # the hung worker was killed, not waited for


def test_always_failing_task_recorded_after_all_attempts(setup, tmp_path, caplog):
    image, tasks, settings = setup
    attempts_log = tmp_path / "attempts.txt"
    results, failures = run_tasks(image, tasks, settings, workers=2, fault_hook=AlwaysFail("ROI_A", attempts_log))
    assert [r["roi_name"] for r in results] == ["ROI_B", "Box GTV"]
    assert len(failures) == 1
    fail = failures[0]
    assert (fail["roi_name"], fail["source"], fail["attempts"]) == ("ROI_A", "manual", 3)
    assert fail["error"] == "RuntimeError: synthetic failure for ROI_A"
    assert attempts_log.read_text().split() == ["1", "2", "3"]
    assert "halving" not in caplog.text  # an ordinary exception is retried in the same pool


def test_sequential_retries_too(setup, tmp_path):
    image, tasks, settings = setup
    results, failures = run_tasks(
        image, tasks, settings, workers=1, sequential=True, fault_hook=FaultOnce("ROI_B", tmp_path, "memory")
    )
    assert failures == [] and [r["roi_name"] for r in results] == ROIS
