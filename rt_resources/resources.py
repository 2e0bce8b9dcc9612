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


class TotalSegmentator(ConfigurableResource):
    """TotalSegmentator's settings (the CLI's --totalseg-* flags); weights in ``TOTALSEG_HOME_DIR``."""

    home: str = Field(default="", description="TOTALSEG_HOME_DIR (default ~/.totalsegmentator)")
    task: str = "total"
    fast: bool = False
    roi_subset: list[str] = Field(default_factory=list)
    device: str = Field(default="gpu", description="gpu | cpu")
    force_split: bool = False
    threads: int = Field(default=0, description="resampling/saving threads; 0 = max(2, min(8, cores // 2))")
    license_key: str = ""

    def settings(self):
        from rt_resources.segmentation.totalseg import TotalSegSettings, default_threads

        home = Path(self.home) if self.home else Path.home() / ".totalsegmentator"
        return TotalSegSettings(
            home=home,
            task=self.task,
            fast=self.fast,
            roi_subset=tuple(self.roi_subset),
            device=self.device,
            force_split=self.force_split,
            threads=self.threads or default_threads(),
            license_key=self.license_key,
        )


class SegmentationConfig(ConfigurableResource):
    """Where custom nnU-Net models, custom-structure rules and crop regions come from."""

    models_dir: str = Field(default="", description="folder of custom nnU-Net model folders (model.yaml each)")
    custom_structures: str = Field(default="", description="YAML file of boolean structure combinations")
    crop_regions: list[str] = Field(default_factory=list, description="regions to crop to, e.g. [thorax]")
    device: str = Field(default="gpu", description="device of custom nnU-Net models: gpu | cpu")


class RadiomicsConfig(ConfigurableResource):
    """pyradiomics settings: parameter file (shipped CT.yaml by default), workers, sequential mode."""

    params: str = Field(default="", description="pyradiomics parameter YAML; empty = the shipped CT.yaml")
    mr_params: str = Field(default="", description="parameter YAML for MR images; empty = the shipped MR.yaml")
    workers: int = Field(default=0, description="worker processes; 0 = CPU cores - 1")
    sequential: bool = Field(default=False, description="one ROI at a time, in process (--sequential-radiomics)")

    def settings(self):
        from rt_resources.radiomics.engine import PARAMS_DIR, RadiomicsSettings

        params = Path(self.params) if self.params else PARAMS_DIR / "CT.yaml"
        mr_params = Path(self.mr_params) if self.mr_params else PARAMS_DIR / "MR.yaml"
        return RadiomicsSettings(params=params, mr_params=mr_params)

    def worker_count(self) -> int:
        from rt_resources.radiomics.engine import default_workers

        return self.workers or default_workers()


def _env_list(name: str) -> list[str]:
    return [v.strip() for v in os.environ.get(name, "").split(",") if v.strip()]


def resources_from_env() -> dict:
    """Resources for a local deployment, configured from environment variables."""
    return {
        "data_root": DataRoot(path=os.environ.get("RT_DATA_ROOT", "rt_data")),
        "dicom_drop": DicomDrop(
            path=os.environ.get("RT_DROP_ROOT", ""),
            quiet_period_s=float(os.environ.get("RT_QUIET_PERIOD_S", DEFAULT_QUIET_PERIOD_S)),
        ),
        "totalsegmentator": TotalSegmentator(
            home=os.environ.get("TOTALSEG_HOME_DIR", ""),
            task=os.environ.get("RT_TOTALSEG_TASK", "total"),
            fast=os.environ.get("RT_TOTALSEG_FAST", "") in ("1", "true", "yes"),
            roi_subset=_env_list("RT_TOTALSEG_ROI_SUBSET"),
            device=os.environ.get("RT_TOTALSEG_DEVICE", "gpu"),
            license_key=os.environ.get("RT_TOTALSEG_LICENSE", ""),
        ),
        "radiomics_config": RadiomicsConfig(
            params=os.environ.get("RT_RADIOMICS_PARAMS", ""),
            mr_params=os.environ.get("RT_RADIOMICS_MR_PARAMS", ""),
            workers=int(os.environ.get("RT_RADIOMICS_WORKERS", "0") or 0),
            sequential=os.environ.get("RT_SEQUENTIAL_RADIOMICS", "") in ("1", "true", "yes"),
        ),
        "segmentation_config": SegmentationConfig(
            models_dir=os.environ.get("RT_MODELS_DIR", ""),
            custom_structures=os.environ.get("RT_CUSTOM_STRUCTURES", ""),
            crop_regions=_env_list("RT_CROP_REGIONS"),
            device=os.environ.get("RT_TOTALSEG_DEVICE", "gpu"),
        ),
    }
