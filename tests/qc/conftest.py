"""The synthetic course the QC check tests share (built once for the package; tests copy before editing).

``test_previews.py`` builds its own ``course`` (files as the preview assets read them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rt_resources.dicom.sop_classes import Kind
from rt_resources.ingest.manifest import Manifest, primary_structure_set, read_manifest, source_files
from rt_resources.structures.rtstruct import read_rois
from rt_resources.synthetic import write_patient
from tests.qc.helpers import OPTIONS, materialize_course


@pytest.fixture(scope="package")
def course(tmp_path_factory) -> Path:
    """A synthetic course (primary + boost, 48x48x24 CT of 8 mm voxels) through the course assets."""
    root = tmp_path_factory.mktemp("qc_course")
    write_patient(root / "drop", 0, OPTIONS)
    return materialize_course(root / "drop", root / "data")


@pytest.fixture(scope="package")
def manifest(course) -> Manifest:
    return read_manifest(course)


@pytest.fixture(scope="package")
def rois(manifest):
    uid = primary_structure_set(manifest)
    (struct,) = [f for f in source_files(manifest, Kind.RTSTRUCT) if f.sop_instance_uid == uid]
    return read_rois(struct.abspath)
