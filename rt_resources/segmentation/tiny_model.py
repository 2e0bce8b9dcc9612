"""A tiny, randomly initialised nnU-Net v2 model in TotalSegmentator's exact folder layout.

The official weights cannot be downloaded here. This writes a stand-in that the *real*
``totalsegmentator.python_api.totalsegmentator(...)`` loads and runs end to end (weights lookup,
plans, trainer resolution, resampling, sliding-window inference, export). The masks are arbitrary.

Layout written for ``task="total_fast"`` (what ``totalsegmentator(task="total", fast=True)`` loads)::

    home/config.json                                  (usage statistics off)
    home/nnunet/results/Dataset297_TotalSegmentator_total_3mm_1559subj/
        nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres/
            dataset.json  plans.json  fold_0/checkpoint_final.pth

Folder name, trainer, plans, configuration, fold, spacing and label map are read from
TotalSegmentator's own tables (``map_tasks_config``, ``map_to_binary``), the network is built with
nnU-Net's ``get_network_from_plans`` exactly as ``nnUNetPredictor.initialize_from_trained_model_folder``
rebuilds it, so the state dict matches. torch / nnunetv2 are imported inside the function.
"""

from __future__ import annotations

import json
from pathlib import Path

from rt_resources.segmentation.nnunet_compat import ensure_quiet_config, expected_model_folders

PATCH_SIZE = [64, 64, 64]  # one tile covers the 64x64x48 test phantom; a 3 mm body CT needs ~20-30
FEATURES_PER_STAGE = [4, 8, 16]
CONFIGURATION = "3d_fullres"
PLANS_NAME = "nnUNetPlans"
#: ``dataset.json["name"]`` of the stand-in; a model folder without it is never overwritten
MARKER = "tiny_random_stand_in"

# nnU-Net's dataset fingerprint for channel 0, as CTNormalization reads it (clip to the 0.5/99.5
# percentiles, then z-score); plausible CT values.
_CT_INTENSITY = {
    "max": 3071.0,
    "mean": 50.0,
    "median": 40.0,
    "min": -1024.0,
    "percentile_00_5": -1000.0,
    "percentile_99_5": 1500.0,
    "std": 400.0,
}


def _split_task(task: str) -> tuple[str, str]:
    """``"total_fast"`` -> (``"total"``, ``"fast"``); ``"total_mr_fastest"`` -> (``"total_mr"``, ``"fastest"``)."""
    for mode in ("fastest", "fast"):
        if task.endswith("_" + mode):
            return task[: -len(mode) - 1], mode
    raise ValueError(f"task must look like '<task>_fast' or '<task>_fastest' (e.g. 'total_fast'), got {task!r}")


def _plans(dataset_name: str, spacing: float, modality: str) -> dict:
    n_stages = len(FEATURES_PER_STAGE)
    configuration = {
        "data_identifier": f"{PLANS_NAME}_{CONFIGURATION}",
        "preprocessor_name": "DefaultPreprocessor",
        "batch_size": 2,
        "patch_size": list(PATCH_SIZE),
        "median_image_size_in_voxels": [64, 64, 64],
        "spacing": [spacing] * 3,
        "normalization_schemes": ["CTNormalization" if modality == "CT" else "ZScoreNormalization"],
        "use_mask_for_norm": [False],
        "resampling_fn_data": "resample_data_or_seg_to_shape",
        "resampling_fn_seg": "resample_data_or_seg_to_shape",
        "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
        "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
        "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
        "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0, "force_separate_z": None},
        "architecture": {
            "network_class_name": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
            "arch_kwargs": {
                "n_stages": n_stages,
                "features_per_stage": list(FEATURES_PER_STAGE),
                "conv_op": "torch.nn.modules.conv.Conv3d",
                "kernel_sizes": [[3, 3, 3]] * n_stages,
                "strides": [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1),
                "n_conv_per_stage": [2] * n_stages,
                "n_conv_per_stage_decoder": [2] * (n_stages - 1),
                "conv_bias": True,
                "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
                "norm_op_kwargs": {"eps": 1e-05, "affine": True},
                "dropout_op": None,
                "dropout_op_kwargs": None,
                "nonlin": "torch.nn.LeakyReLU",
                "nonlin_kwargs": {"inplace": True},
            },
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
        "batch_dice": False,
    }
    return {
        "dataset_name": dataset_name,
        "plans_name": PLANS_NAME,
        "original_median_spacing_after_transp": [spacing] * 3,
        "original_median_shape_after_transp": [64, 64, 64],
        "image_reader_writer": "SimpleITKIO",
        "transpose_forward": [0, 1, 2],
        "transpose_backward": [0, 1, 2],
        "configurations": {CONFIGURATION: configuration},
        "experiment_planner_used": "ExperimentPlanner",
        "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {"0": dict(_CT_INTENSITY)},
    }


def _dataset_json(labels: dict[int, str], modality: str) -> dict:
    return {
        "channel_names": {"0": modality},
        "labels": {"background": 0, **{name: int(idx) for idx, name in sorted(labels.items())}},
        "numTraining": 1,
        "file_ending": ".nii.gz",
        "name": MARKER,
        "description": "Random stand-in from rt_resources.segmentation.tiny_model; masks are arbitrary",
    }


def build_tiny_totalseg_model(home: Path, task: str = "total_fast", seed: int = 0) -> Path:
    """Write a tiny random nnU-Net v2 model for ``task`` into ``home`` (a TOTALSEG_HOME_DIR); returns its folder.

    ``task`` is ``"<TotalSegmentator task>_fast"`` or ``"..._fastest"``; ``"total_fast"`` is what
    ``totalsegmentator(task="total", fast=True)`` loads. The returned folder is the
    ``<trainer>__nnUNetPlans__3d_fullres`` one (holding ``plans.json``, ``dataset.json`` and
    ``fold_0/checkpoint_final.pth``). Same ``seed`` -> same weights. Rewrites an earlier stand-in; raises
    ``FileExistsError`` rather than overwrite a real model folder.
    """
    import torch
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager
    from totalsegmentator.map_tasks_config import TASK_CONFIGS
    from totalsegmentator.map_to_binary import class_map

    base, mode = _split_task(task)
    sub_modes = TASK_CONFIGS.get(base, {}).get("sub_modes", {})
    if mode not in sub_modes:
        raise ValueError(f"TotalSegmentator has no {mode!r} model for task {base!r}")
    sub = sub_modes[mode]
    spacing = float(sub["resample"])
    trainer = sub["trainer"]
    modality = "MRI" if base.endswith("_mr") else "CT"

    home = Path(home)
    (fold_dir,) = expected_model_folders(home, base, fast=mode == "fast", fastest=mode == "fastest")
    model_dir = fold_dir.parent
    dataset_name = model_dir.parent.name
    existing = model_dir / "dataset.json"
    if existing.exists() and json.loads(existing.read_text()).get("name") != MARKER:
        raise FileExistsError(f"{model_dir} holds a real model; refusing to overwrite it with random weights")
    fold_dir.mkdir(parents=True, exist_ok=True)

    plans = _plans(dataset_name, spacing, modality)
    dataset_json = _dataset_json(class_map[base], modality)
    (model_dir / "plans.json").write_text(json.dumps(plans, indent=2))
    (model_dir / "dataset.json").write_text(json.dumps(dataset_json, indent=2))

    # rebuild exactly as nnUNetPredictor.initialize_from_trained_model_folder does
    plans_manager = PlansManager(plans)
    configuration_manager = plans_manager.get_configuration(CONFIGURATION)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        network = get_network_from_plans(
            configuration_manager.network_arch_class_name,
            configuration_manager.network_arch_init_kwargs,
            configuration_manager.network_arch_init_kwargs_req_import,
            determine_num_input_channels(plans_manager, configuration_manager, dataset_json),
            plans_manager.get_label_manager(dataset_json).num_segmentation_heads,
            allow_init=True,
            deep_supervision=False,
        )
    checkpoint = {  # the keys nnUNetTrainer.save_checkpoint writes
        "network_weights": network.state_dict(),
        "optimizer_state": None,
        "grad_scaler_state": None,
        "logging": {},
        "_best_ema": None,
        "current_epoch": 0,
        "init_args": {
            "plans": plans,
            "configuration": CONFIGURATION,
            "fold": int(fold_dir.name.split("_")[-1]),
            "dataset_json": dataset_json,
            "device": torch.device("cpu"),
        },
        "trainer_name": trainer,
        "inference_allowed_mirroring_axes": None,  # the *_NoMirroring trainers set None
    }
    torch.save(checkpoint, fold_dir / "checkpoint_final.pth")
    ensure_quiet_config(home)
    return model_dir


def count_parameters(model_dir: Path) -> int:
    """Number of distinct weights in ``model_dir/fold_0/checkpoint_final.pth``.

    nnU-Net's state dict lists some tensors twice (``conv`` and ``all_modules.0`` alias each other and
    ``decoder.encoder`` is the encoder), so aliases are counted once.
    """
    import torch

    state = torch.load(Path(model_dir) / "fold_0" / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    seen = {}
    for tensor in state["network_weights"].values():
        seen[(tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape))] = tensor.numel()
    return int(sum(seen.values()))
