"""Shared fixtures: synthetic drops on disk, Dagster test instances, resources.

Helpers that tests import (``SMALL``, ``FAST_RADIOMICS``, ``tree_digest``, ``course_resources``,
``copy_shared``, ...) are in :mod:`tests.helpers`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rt_resources.synthetic import SynthOptions, write_patient
from tests.helpers import FAST_RADIOMICS, SMALL, course_resources


@pytest.fixture(autouse=True)
def _site_secret(monkeypatch):
    monkeypatch.setenv("RT_SITE_SECRET", "test-secret")
    monkeypatch.setenv("RT_RADIOMICS_PARAMS", str(FAST_RADIOMICS))  # for CLI and dagster dev subprocesses
    # the ~100 automatic organs of the segmentation tests get the basic set: fast there too
    monkeypatch.setenv("RT_RADIOMICS_BASIC_PARAMS", str(FAST_RADIOMICS))
    # and BODY (the light set: all seven classes resampled to 3 mm, ~10 s a course at test sizes)
    monkeypatch.setenv("RT_RADIOMICS_LIGHT_PARAMS", str(FAST_RADIOMICS))


@pytest.fixture
def drop(tmp_path) -> Path:
    d = tmp_path / "drop"
    d.mkdir()
    return d


@pytest.fixture
def data_root(tmp_path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def two_courses(drop):
    """Two patients, primary + boost on one CT each."""
    opts = SynthOptions(**{**SMALL.__dict__, "boost": True})
    return [write_patient(drop, i, opts) for i in range(2)]


@pytest.fixture
def resources(drop, data_root, tmp_path):
    # no weights in this home: segmentation fails fast unless a test builds the tiny model
    return course_resources(drop, data_root, tmp_path / "totalseg_home")


@pytest.fixture
def instance():
    from dagster import instance_for_test

    with instance_for_test() as inst:
        yield inst
