"""Radiomics feature extraction (pyradiomics) with a resilient process pool."""

from rt_resources.radiomics.engine import (
    PARAMS_DIR,
    RadiomicsSettings,
    RadiomicsTask,
    default_workers,
    extract_one,
    run_tasks,
    select_tasks,
)

__all__ = [
    "PARAMS_DIR",
    "RadiomicsSettings",
    "RadiomicsTask",
    "default_workers",
    "extract_one",
    "run_tasks",
    "select_tasks",
]
