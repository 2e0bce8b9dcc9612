"""The cohort tables and the audit ledger are built while a course run is in flight (its checks
planned, not evaluated): the build succeeds, and a later build picks up that run's results."""

import time

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey, DagsterRunStatus, materialize

from rt_assets.assets.cohort.cohort_audit import cohort_audit
from rt_assets.assets.cohort.cohort_qc import cohort_qc
from rt_assets.qc import CHECKS
from rt_resources.resources import DataRoot
from rt_resources.synthetic import write_patient
from tests.headless.helpers import instance_of, runs_of, start_cli
from tests.headless.test_crash_recovery import SLOWER


def _planned_ids(instance, run_id: str) -> set[int]:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

    ids = set()
    for asset, specs in CHECKS.items():
        for name, _, _ in specs:
            key = AssetCheckKey(AssetKey(asset), name)
            for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=50):
                if record.run_id == run_id and record.status == AssetCheckExecutionRecordStatus.PLANNED:
                    ids.add(record.id)
    return ids


@pytest.mark.slow
def test_ledger_during_a_course_run_then_its_checks(drop, tmp_path):
    write_patient(drop, 0, SLOWER)
    out = tmp_path / "out"
    cli = start_cli("run", "--dicom-root", str(drop), "--outdir", str(out), log=tmp_path / "cli.log")
    deadline = time.time() + 300
    run_id, pending = None, set()
    while time.time() < deadline and not pending:
        if (out / ".dagster" / "dagster.yaml").exists():
            instance = instance_of(out)
            started = [r for r in runs_of(instance, "course_job") if r.status == DagsterRunStatus.STARTED]
            if started:
                run_id = started[0].run_id
                pending = _planned_ids(instance, run_id)
        time.sleep(0.3)
    assert pending, "no course run in flight with planned checks"

    result = materialize([cohort_audit, cohort_qc], instance=instance, resources={"data_root": DataRoot(path=str(out))})
    assert result.success  # planned, not yet evaluated checks do not break the ledger
    first = sorted((out / "cohort" / "audit").glob("ledger-*.parquet"))
    assert len(first) == 1
    early = pd.read_parquet(first[0])
    assert cli.wait(timeout=600) == 0, (tmp_path / "cli.log").read_text()[-3000:]

    ledger = pd.read_parquet(out / "cohort" / "audit")
    checks = ledger[(ledger["event"] == "check") & (ledger["run_id"] == run_id)]
    assert set(pending) <= set(checks["event_id"])  # every check the run planned is in the ledger now
    assert checks["passed"].notna().all()  # with its verdict
    late = set(pending) - set(early["event_id"])
    assert late, "every check was already evaluated before the first build: nothing was in flight"
    assert len(sorted((out / "cohort" / "audit").glob("ledger-*.parquet"))) >= 2  # a later, appended part
    assert not ledger.duplicated(["event", "event_id"]).any()
