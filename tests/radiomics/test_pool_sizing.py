"""The pool sized by free memory (rt_resources.parallel): start, re-measure as tasks finish, grow
back after a halving once memory frees, and the "Parallelization Configuration" log block.

Free memory is replaced by a fixed or scripted number in the parent (the sizing runs there); the
workers' peaks are real measurements.
"""

from __future__ import annotations

import logging

from rt_resources import pool_memory
from rt_resources.parallel import MemoryPolicy, RetryPolicy, run_pool
from rt_resources.pool_memory import GIB
from rt_resources.radiomics import RadiomicsSettings, run_tasks, select_tasks
from tests.radiomics.pool_memory import Allocate, KillOnce

MIB = 2**20


def test_peak_rss_is_measured_per_task():
    pool_memory.reset_peak_rss()
    before = pool_memory.peak_rss_bytes()
    Allocate(200)(0)
    peak = pool_memory.peak_rss_bytes()
    assert peak - before >= 180 * MIB
    pool_memory.reset_peak_rss()  # the next task's peak starts from the current RSS again
    assert pool_memory.peak_rss_bytes() < peak - 150 * MIB


def test_start_is_limited_by_free_memory_and_logged(monkeypatch, caplog):
    monkeypatch.setattr(pool_memory, "available_memory_bytes", lambda: 3 * GIB)
    caplog.set_level(logging.INFO, logger="rtpipeline.sizing")
    memory = MemoryPolicy(peak_hint_bytes=GIB, reserve_bytes=0)
    out = run_pool(Allocate(1), list(range(6)), workers=4, label="sizing", memory=memory)
    assert out.results == {i: i for i in range(6)} and out.failures == {}
    assert out.config["start_workers"] == 3 and out.config["memory_workers"] == 3
    assert out.config["peak_source"].startswith("hint")
    assert "Parallelization Configuration (sizing)" in caplog.text
    assert "starting workers   3 = min(requested 4, memory 3)" in caplog.text
    assert "Enabled parallel sizing processing: 3 workers (memory; 4 requested)" in caplog.text
    # the measured peaks (tens of MB) then let it grow to the 4 requested
    assert out.workers == 4 and any("workers 3 -> 4" in s for s in out.sizing)


def test_measured_peak_that_does_not_fit_lowers_the_pool(monkeypatch):
    monkeypatch.setattr(pool_memory, "available_memory_bytes", lambda: 300 * MIB)
    out = run_pool(
        Allocate(600), list(range(5)), workers=2, label="sizing",
        memory=MemoryPolicy(peak_hint_bytes=50 * MIB, reserve_bytes=0),
    )  # fmt: skip
    assert out.results == {i: i for i in range(5)}
    assert out.config["start_workers"] == 2  # the hint fitted twice
    assert out.workers == 1 and any("workers 2 -> 1" in s and "measured" in s for s in out.sizing)


def test_halved_pool_grows_back_once_memory_frees(monkeypatch, tmp_path):
    free = {"bytes": 4 * GIB}
    monkeypatch.setattr(pool_memory, "available_memory_bytes", lambda: free["bytes"])
    halve = pool_memory.PoolSizer.halve

    def halve_then_free(self):
        out = halve(self)
        free["bytes"] = 8 * GIB  # what the dead worker held comes back
        return out

    monkeypatch.setattr(pool_memory.PoolSizer, "halve", halve_then_free)
    out = run_pool(
        KillOnce(3, tmp_path / "killed"), list(range(10)), workers=2, label="sizing",
        policy=RetryPolicy(attempts=3, backoff_s=0.01), memory=MemoryPolicy(peak_hint_bytes=GIB, reserve_bytes=0),
    )  # fmt: skip
    assert (tmp_path / "killed").exists()
    assert out.results == {i: i for i in range(10)} and out.failures == {}
    assert "halving workers 2 -> 1" in out.events[0]
    assert any("freed since the halving; growing back 1 -> 2" in s for s in out.sizing)
    assert out.workers == 2


def test_halved_pool_stays_small_while_memory_does_not_free(monkeypatch, tmp_path):
    monkeypatch.setattr(pool_memory, "available_memory_bytes", lambda: 4 * GIB)
    out = run_pool(
        KillOnce(3, tmp_path / "killed"), list(range(8)), workers=2, label="sizing",
        policy=RetryPolicy(attempts=3, backoff_s=0.01), memory=MemoryPolicy(peak_hint_bytes=GIB, reserve_bytes=0),
    )  # fmt: skip
    assert out.results == {i: i for i in range(8)}
    assert "halving workers 2 -> 1" in out.events[0]
    assert out.workers == 1 and out.sizing == []


def test_memory_sizing_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(pool_memory, "available_memory_bytes", lambda: 0)
    out = run_pool(Allocate(1), list(range(3)), workers=2, label="sizing", memory=MemoryPolicy(enabled=False))
    assert out.config["start_workers"] == 2 and out.workers == 2 and out.sizing == []


def test_radiomics_pool_logs_its_configuration(synth, caplog):
    caplog.set_level(logging.INFO, logger="rtpipeline.radiomics")
    settings = RadiomicsSettings(params=synth["params"], light_params=None)
    tasks, _ = select_tasks(synth["masks"], settings)
    results, failures = run_tasks(synth["image"], tasks, settings, workers=2)
    assert failures == [] and len(results) == 3
    assert "Parallelization Configuration (radiomics)" in caplog.text
    assert f"peak per worker    {settings.worker_peak_hint_bytes / GIB:.1f} GiB (hint" in caplog.text
