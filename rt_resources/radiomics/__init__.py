"""Radiomics feature extraction (pyradiomics, or fastrad on a GPU) with a resilient process pool,
a per-ROI parameter policy, and feature robustness under image perturbations.

The engine's names are loaded on first use, so that importing :mod:`rt_resources.radiomics.policy`
(the settings take their defaults from it) loads neither numpy nor the pool.
"""

from __future__ import annotations

import importlib
from typing import Any

_ENGINE_NAMES = (
    "PARAMS_DIR",
    "RadiomicsInputError",
    "RadiomicsSettings",
    "RadiomicsTask",
    "extract_image",
    "extract_one",
    "extract_one_recorded",
    "run_tasks",
    "select_tasks",
)
_POLICY_NAMES = ("DEFAULT_FULL_ROIS", "DEFAULT_FULL_SOURCES", "ParamSet", "RoiPolicy")

__all__ = [*_ENGINE_NAMES, *_POLICY_NAMES]


def __getattr__(name: str) -> Any:
    if name in _ENGINE_NAMES:
        return getattr(importlib.import_module("rt_resources.radiomics.engine"), name)
    if name in _POLICY_NAMES:
        return getattr(importlib.import_module("rt_resources.radiomics.policy"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
