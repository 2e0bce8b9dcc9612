"""Make TotalSegmentator's Python API usable offline and on CPU-only torch.

Everything here imports torch / totalsegmentator / nnunetv2 lazily (inside the functions), so
importing this module is cheap.

Why the trainer registration: nnU-Net resolves the trainer named in ``checkpoint_final.pth`` with
``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``, which imports *every* module
under ``nnunetv2/training/nnUNetTrainer``. One of them pulls in timm -> torchvision, and the
torchvision that pip pairs with CPU torch raises ``RuntimeError: operator torchvision::nms does not
exist`` on import. ``totalsegmentator.nnunet`` monkey-patches that lookup (in
``nnunetv2.inference.predict_from_raw_data``) to consult its module-level dict
``totalsegmentator.nnunet.custom_trainers`` first. :func:`register_trainer` imports nnU-Net's own
trainer class from the one module that defines it (those import cleanly), puts it into that dict and
into a registry that a small wrapper around nnU-Net's lookup consults first (so plain
``nnUNetPredictor`` use is covered too); the scan never runs. On CUDA torch it is harmless.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from pathlib import Path

#: trainers TotalSegmentator's CT/MR "total" tasks (and their crop models) name in their checkpoints
TOTALSEG_TRAINERS = (
    "nnUNetTrainer",
    "nnUNetTrainerNoMirroring",
    "nnUNetTrainer_2000epochs_NoMirroring",
    "nnUNetTrainer_4000epochs_NoMirroring",
)

#: trainer name -> class, consulted before nnU-Net's scan of its trainer package
_REGISTRY: dict[str, type] = {}
_PATCH_MARK = "_rt_trainer_registry"

#: config.json keys that keep TotalSegmentator from posting statistics or printing its disclaimer.
_QUIET_CONFIG = {"send_usage_stats": False, "statistics_disclaimer_shown": True}


def weights_dir(home: Path) -> Path:
    """Where TotalSegmentator looks for model folders when ``TOTALSEG_HOME_DIR=home``."""
    return Path(home) / "nnunet" / "results"


def ensure_quiet_config(home: Path) -> Path:
    """Create or update ``home/config.json`` so usage statistics are off; returns its path."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    path = home / "config.json"
    config: dict = {}
    if path.exists():
        try:
            config = json.loads(path.read_text())
        except (OSError, ValueError):
            config = {}
    # the keys TotalSegmentator's config.py reads: totalseg_id (stats payload), prediction_counter
    # (incremented after every run), send_usage_stats, statistics_disclaimer_shown
    wanted = {"totalseg_id": "totalseg_offline", "prediction_counter": 0, **config, **_QUIET_CONFIG}
    if wanted != config:
        path.write_text(json.dumps(wanted, indent=4))
    return path


def find_trainer_class(name: str) -> type:
    """Import nnU-Net's trainer class ``name`` from the one module that defines it (no package-wide scan)."""
    import nnunetv2

    package = Path(nnunetv2.__path__[0])
    pattern = re.compile(rf"^class\s+{re.escape(name)}\s*[(:]", re.MULTILINE)
    for path in sorted((package / "training" / "nnUNetTrainer").rglob("*.py")):
        if pattern.search(path.read_text(errors="ignore")):
            module = ".".join(("nnunetv2", *path.relative_to(package).with_suffix("").parts))
            return getattr(importlib.import_module(module), name)
    raise LookupError(f"nnU-Net trainer {name!r} is not defined under {package / 'training' / 'nnUNetTrainer'}")


def _install_lookup_patch() -> None:
    """Make nnU-Net's trainer lookup consult ``_REGISTRY`` first (chains with TotalSegmentator's own patch)."""
    import nnunetv2.inference.predict_from_raw_data as predict_module
    import nnunetv2.utilities.find_objects as find_module

    for module in (find_module, predict_module):
        current = module.recursive_find_trainer_class_by_name
        if getattr(current, _PATCH_MARK, False):
            continue

        def lookup(trainer_name: str, _fallback=current):
            if trainer_name in _REGISTRY:
                return _REGISTRY[trainer_name]
            return _fallback(trainer_name)

        setattr(lookup, _PATCH_MARK, True)
        module.recursive_find_trainer_class_by_name = lookup


def register_trainer(name: str, cls: type | None = None) -> type:
    """Let nnU-Net inference resolve trainer ``name`` without importing every trainer module; returns the class.

    ``cls`` defaults to nnU-Net's own class of that name (see :func:`find_trainer_class`). Works for
    plain ``nnUNetPredictor`` use and for TotalSegmentator (also added to
    ``totalsegmentator.nnunet.custom_trainers`` once that module is imported). Idempotent.
    """
    cls = cls or _REGISTRY.get(name) or find_trainer_class(name)
    _REGISTRY[name] = cls
    _install_lookup_patch()
    ts_nnunet = sys.modules.get("totalsegmentator.nnunet")
    if ts_nnunet is not None:
        ts_nnunet.custom_trainers.setdefault(name, cls)
    return cls


def register_trainers(names: tuple[str, ...] = TOTALSEG_TRAINERS) -> list[str]:
    """Register TotalSegmentator's trainers (see :func:`register_trainer`); returns the names registered."""
    import totalsegmentator.nnunet  # noqa: F401  (installs TotalSegmentator's lookup patch and its dict)

    done = []
    for name in names:
        try:
            register_trainer(name)
        except (ImportError, LookupError, AttributeError, RuntimeError):
            continue
        done.append(name)
    return done


def prepare_totalsegmentator_runtime(home: Path) -> None:
    """Point TotalSegmentator and nnU-Net at ``home`` and make the Python API safe offline on CPU torch.

    Sets ``TOTALSEG_HOME_DIR`` (and drops ``TOTALSEG_WEIGHTS_PATH``, so ``home`` is the only place
    weights are looked for), sets the nnU-Net path variables to ``home/nnunet/results`` (as
    TotalSegmentator's own ``setup_nnunet`` does), turns usage statistics off in ``home/config.json``
    and registers the trainer classes. Idempotent.
    """
    home = Path(home).resolve()
    os.environ["TOTALSEG_HOME_DIR"] = str(home)
    os.environ.pop("TOTALSEG_WEIGHTS_PATH", None)
    results = weights_dir(home)
    results.mkdir(parents=True, exist_ok=True)
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        os.environ[var] = str(results)
    ensure_quiet_config(home)
    register_trainers()


def task_config(task: str, fast: bool, fastest: bool = False) -> dict:
    """TotalSegmentator's configuration of ``task`` (task ids, trainer, model, folds, resample),
    with the sub-mode resolved as ``totalsegmentator.python_api.get_task_config`` does it, without
    importing the Python API (which imports torch)."""
    from totalsegmentator.map_tasks_config import DEFAULT_CONFIG, TASK_CONFIGS

    if task not in TASK_CONFIGS:
        raise ValueError(f"unknown TotalSegmentator task {task!r}")
    raw = TASK_CONFIGS[task]
    config = dict(DEFAULT_CONFIG)
    if "sub_modes" in raw:
        mode = "fast" if fast else ("fastest" if fastest else "default")
        if mode not in raw["sub_modes"]:
            mode = "fast" if fast or fastest else "default"
        config.update(raw["sub_modes"][mode])
    else:
        config.update(raw)
    return config


def expected_model_folders(home: Path, task: str, fast: bool, fastest: bool = False) -> list[Path]:
    """The ``fold_N`` folders TotalSegmentator will load for ``task`` (one per part for multi-model tasks)."""
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS

    config = task_config(task, fast, fastest)
    task_ids = config["task_id"] if isinstance(config["task_id"], list) else [config["task_id"]]
    plans = config.get("plans") or "nnUNetPlans"  # totalsegmentator() passes plans="nnUNetPlans"
    identifier = f"{config['trainer']}__{plans}__{config['model']}"
    folders = []
    for task_id in task_ids:
        info = TASK_ID_WEIGHTS_CONFIGS.get(task_id, {})
        name = info.get("foldername")
        if name is None:
            raise ValueError(f"no weights folder known for task id {task_id}")
        rel = Path(info["rel_path"]) / name if info.get("rel_path") else Path(name)
        for fold in config["folds"]:
            folders.append(weights_dir(home) / rel / identifier / f"fold_{fold}")
    return folders


def totalseg_weights_present(home: Path, task: str, fast: bool) -> tuple[bool, Path]:
    """Whether every checkpoint ``task`` needs exists under ``home``; returns the (first missing) path checked.

    Only the main model is checked, not the 6 mm crop model that ``roi_subset`` adds.
    """
    checked = None
    for folder in expected_model_folders(home, task, fast):
        checked = folder / "checkpoint_final.pth"
        parent = folder.parent
        if not (checked.is_file() and (parent / "plans.json").is_file() and (parent / "dataset.json").is_file()):
            return False, checked
    return checked is not None, checked
