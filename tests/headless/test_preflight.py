"""Services down at start: one line naming the address, within seconds, never a hang."""

from __future__ import annotations

import time

import pytest

from rt_assets.headless.preflight import ServiceDown, check_broker, redact, root_cause
from rt_resources.settings import load_settings
from tests.cluster.services import free_port


def test_a_broker_that_is_down_is_named_within_seconds():
    port = free_port()  # nothing listens there
    settings = load_settings(
        environ={}, overrides={"step_executor": "celery", "celery": {"broker": f"redis://127.0.0.1:{port}/0"}}
    )
    start = time.time()
    with pytest.raises(ServiceDown) as err:
        check_broker(settings, timeout_s=2)
    assert time.time() - start < 15
    assert f"redis://127.0.0.1:{port}/0" in str(err.value) and "RT_CELERY_BROKER" in str(err.value)


def test_no_broker_is_checked_without_celery():
    check_broker(load_settings(environ={}, overrides={"celery": {"broker": "redis://127.0.0.1:1/0"}}))


def test_passwords_are_not_shown():
    assert redact("postgresql+psycopg2://rt:s3cret@db.example.org:5432/dagster") == (
        "postgresql+psycopg2://rt:***@db.example.org:5432/dagster"
    )
    assert redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_root_cause_is_the_innermost_message():
    try:
        try:
            raise ConnectionRefusedError('connection to server at "10.0.0.5", port 5432 failed')
        except OSError as inner:
            raise RuntimeError("too many retries for DB connection") from inner
    except RuntimeError as outer:
        assert root_cause(outer) == 'connection to server at "10.0.0.5", port 5432 failed'
