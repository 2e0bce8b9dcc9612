"""Radiomics feature extraction (pyradiomics, or fastrad on a GPU) with a resilient process pool,
and feature robustness under image perturbations."""

from rt_resources.radiomics.engine import (
    PARAMS_DIR,
    RadiomicsInputError,
    RadiomicsSettings,
    RadiomicsTask,
    extract_image,
    extract_one,
    extract_one_recorded,
    run_tasks,
    select_tasks,
)

__all__ = [
    "PARAMS_DIR",
    "RadiomicsInputError",
    "RadiomicsSettings",
    "RadiomicsTask",
    "extract_image",
    "extract_one",
    "extract_one_recorded",
    "run_tasks",
    "select_tasks",
]
