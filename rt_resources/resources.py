"""Dagster resources that configure the engines. A deployment swaps these, never asset code."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from rt_resources.fileio import course_dir
from rt_resources.ingest.survey import DropSurvey, survey_drop

DEFAULT_QUIET_PERIOD_S = 60.0


class DataRoot(ConfigurableResource):
    """Where every output lives (``courses/``, ``cohort/``, ``index/``); ``$RT_DATA_ROOT``."""

    path: str = Field(description="Folder that holds courses/, cohort/ and the drop index")

    @property
    def root(self) -> Path:
        return Path(self.path).resolve()

    def course_dir(self, key: str) -> Path:
        return course_dir(self.root, key)

    def cohort_dir(self) -> Path:
        return self.root / "cohort"


class DicomDrop(ConfigurableResource):
    """The drop folder DICOM lands in (read only); ``$RT_DROP_ROOT``."""

    path: str = Field(default="", description="Folder the scanner or PACS export writes DICOM into")
    quiet_period_s: float = Field(
        default=DEFAULT_QUIET_PERIOD_S,
        description="Seconds without change before a course starts (a _COMPLETE file skips the wait)",
    )

    @property
    def root(self) -> Path:
        if not self.path:
            raise ValueError("no drop folder configured: set RT_DROP_ROOT or the dicom_drop resource's path")
        return Path(self.path).resolve()

    def survey(self, data_root: DataRoot) -> DropSurvey:
        return survey_drop(self.root, data_root.root)


def resources_from_env() -> dict:
    """Resources for a local deployment, configured from environment variables."""
    return {
        "data_root": DataRoot(path=os.environ.get("RT_DATA_ROOT", "rt_data")),
        "dicom_drop": DicomDrop(
            path=os.environ.get("RT_DROP_ROOT", ""),
            quiet_period_s=float(os.environ.get("RT_QUIET_PERIOD_S", DEFAULT_QUIET_PERIOD_S)),
        ),
    }
