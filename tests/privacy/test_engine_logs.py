"""The engines' log lines (process pool retries and failures) reach the run's event log through
dagster.yaml's python_logs, and inside a course step they pass the course's scrubber first."""

import logging
from pathlib import Path

import yaml
from dagster import asset, instance_for_test, materialize

from rt_assets.privacy import use_scrubber
from rt_resources.parallel import RetryPolicy, run_pool
from rt_resources.privacy import Scrubber
from tests.pool_work import FailOn

REPO = Path(__file__).resolve().parents[2]


def _python_logs() -> dict:
    return yaml.safe_load((REPO / "dagster.yaml").read_text())["python_logs"]


def _pool_messages(tmp_path, overrides: dict) -> list[str]:
    @asset
    def pooled() -> None:
        outcome = run_pool(
            FailOn(bad=2, kill=-1, marker=tmp_path / "m"),
            [1, 2, 3],
            workers=1,
            sequential=True,
            policy=RetryPolicy(attempts=2, backoff_s=0.0),
            label="demo",
        )
        assert set(outcome.failures) == {1}

    with instance_for_test(overrides=overrides) as instance:
        result = materialize([pooled], instance=instance)
        assert result.success
        return [e.user_message for e in instance.all_logs(result.run_id)]


def test_pool_failures_reach_the_event_log(tmp_path):
    messages = _pool_messages(tmp_path, {"python_logs": _python_logs()})
    engine = [m for m in messages if "demo" in m and "bad item 2" in m]
    assert any("attempt 1 failed" in m for m in engine), messages  # rt_resources.parallel's retry line
    assert any("failed after 2 attempts" in m for m in engine), messages
    # without dagster.yaml's python_logs the same run records none of them
    assert not [m for m in _pool_messages(tmp_path, {}) if "bad item 2" in m]


def test_engine_records_are_scrubbed_in_a_private_step(caplog):
    scrubber = Scrubber(
        b"secret", drop_root=Path("/data/drop"), rel_paths=["DOE_JOHN/ct1.dcm"], identifiers=["DOE^JOHN"]
    )
    use_scrubber(scrubber)
    try:
        with caplog.at_level(logging.INFO, logger="rtpipeline"):
            logging.getLogger("rtpipeline.radiomics").warning(
                "task %s failed for DOE^JOHN", "/data/drop/DOE_JOHN/ct1.dcm"
            )
    finally:
        use_scrubber(None)
    text = caplog.records[-1].getMessage()
    assert "DOE" not in text and "/data/drop" not in text, text
    assert "f-" in text  # the file by its id
    logging.getLogger("rtpipeline.radiomics").warning("outside a step: %s", "DOE^JOHN")
    assert caplog.records[-1].getMessage().endswith("DOE^JOHN")  # no scrubber, unchanged
