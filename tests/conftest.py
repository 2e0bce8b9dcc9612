"""Shared fixtures: synthetic drops on disk, Dagster test instances, resources."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from rt_resources.synthetic import SynthOptions, write_patient

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SMALL = SynthOptions(rows=32, slices=12, pixel_mm=10.0, slice_mm=5.0)
#: pyradiomics settings that keep tests fast (Original image, first-order and shape features)
FAST_RADIOMICS = Path(__file__).resolve().parent / "data" / "radiomics_fast.yaml"


@pytest.fixture(autouse=True)
def _site_secret(monkeypatch):
    monkeypatch.setenv("RT_SITE_SECRET", "test-secret")
    monkeypatch.setenv("RT_RADIOMICS_PARAMS", str(FAST_RADIOMICS))  # for CLI and dagster dev subprocesses


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 and mtime of every file under ``root``: proof that a folder was not modified."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (
                hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
            )
    return out


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


def course_resources(drop, data_root, totalseg_home) -> dict:
    """The resources a course run needs, on small settings (sequential radiomics, one worker)."""
    from rt_resources.resources import (
        ComputeConfig,
        DataRoot,
        DicomDrop,
        RadiomicsConfig,
        SegmentationConfig,
        TotalSegmentator,
    )

    return {
        "data_root": DataRoot(path=str(data_root)),
        "dicom_drop": DicomDrop(path=str(drop), quiet_period_s=0),
        "totalsegmentator": TotalSegmentator(home=str(totalseg_home), device="cpu", fast=True),
        "segmentation_config": SegmentationConfig(device="cpu"),
        "radiomics_config": RadiomicsConfig(params=str(FAST_RADIOMICS), sequential=True),
        "compute": ComputeConfig(workers=1),
    }


@pytest.fixture
def resources(drop, data_root, tmp_path):
    # no weights in this home: segmentation fails fast unless a test builds the tiny model
    return course_resources(drop, data_root, tmp_path / "totalseg_home")


@pytest.fixture
def instance():
    from dagster import instance_for_test

    with instance_for_test() as inst:
        yield inst


def copy_shared(name: str, dest: Path) -> Path:
    src = SHARED_DATA / name
    if not src.exists():
        pytest.skip(f"{src} not present (shared test data is only in the project workspace)")
    shutil.copytree(src, dest / name)
    return dest / name


def have_shared() -> bool:
    return SHARED_DATA.exists() and os.access(SHARED_DATA, os.R_OK)
