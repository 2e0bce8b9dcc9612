"""Custom nnU-Net v2 models described by a small YAML file, run with nnU-Net's own predictor.

A model folder holds ``model.yaml`` and nnU-Net's trained-model layout::

    <models_dir>/<name>/model.yaml
    <models_dir>/<name>/<dataset>/<trainer>__<plans>__<configuration>/fold_<k>/<checkpoint>

``model.yaml``::

    name: parotids            # becomes masks/<name>/ and the asset nnunet_<name>
    dataset: Dataset101_Parotids
    trainer: nnUNetTrainer
    plans: nnUNetPlans
    configuration: 3d_fullres
    folds: [0]
    checkpoint: checkpoint_final.pth
    labels: {1: Parotid_L, 2: Parotid_R}
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rt_resources.course_paths import RESERVED_SOURCES

MODEL_FILE = "model.yaml"
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")


class ModelError(ValueError):
    """A model folder or model.yaml that cannot be used, naming the file and field."""


@dataclass(frozen=True)
class NnUNetModel:
    name: str
    folder: Path
    dataset: str
    trainer: str
    plans: str
    configuration: str
    folds: tuple[int, ...]
    checkpoint: str
    labels: dict[int, str]

    @property
    def trained_folder(self) -> Path:
        return self.folder / self.dataset / f"{self.trainer}__{self.plans}__{self.configuration}"


def load_model(folder: Path) -> NnUNetModel:
    """Read and check ``folder/model.yaml`` and that the checkpoints it names exist."""
    import yaml

    path = Path(folder) / MODEL_FILE
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ModelError(f"{path}: cannot read: {exc}") from exc
    missing = [k for k in ("name", "dataset", "labels") if k not in spec]
    if missing:
        raise ModelError(f"{path}: missing field(s) {missing}")
    name = str(spec["name"])
    if not _NAME.match(name) or name in RESERVED_SOURCES:
        raise ModelError(f"{path}: name {name!r} must be letters, digits, _ and not a reserved source name")
    try:
        labels = {int(k): str(v) for k, v in dict(spec["labels"]).items()}
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{path}: labels must map label numbers to names ({exc})") from exc
    model = NnUNetModel(
        name=name,
        folder=Path(folder),
        dataset=str(spec["dataset"]),
        trainer=str(spec.get("trainer", "nnUNetTrainer")),
        plans=str(spec.get("plans", "nnUNetPlans")),
        configuration=str(spec.get("configuration", "3d_fullres")),
        folds=tuple(int(f) for f in spec.get("folds", [0])),
        checkpoint=str(spec.get("checkpoint", "checkpoint_final.pth")),
        labels=labels,
    )
    for fold in model.folds:
        ckpt = model.trained_folder / f"fold_{fold}" / model.checkpoint
        if not ckpt.exists():
            raise ModelError(f"{path}: checkpoint {ckpt} does not exist")
    return model


def discover_models(models_dir: Path | None) -> list[NnUNetModel]:
    """Every model folder under ``models_dir`` (sorted by name); bad ones raise ModelError."""
    if not models_dir or not Path(models_dir).is_dir():
        return []
    return sorted((load_model(p.parent) for p in Path(models_dir).glob(f"*/{MODEL_FILE}")), key=lambda m: m.name)


def run_nnunet_model(
    model: NnUNetModel, ct_path: Path, out_dir: Path, device: str, device_index: int | None = None
) -> tuple[dict[str, Path], float]:
    """Predict ``ct_path`` with ``model``; write one uint8 mask per label into ``out_dir``.
    ``device_index``: the CUDA device (this process's index) for device gpu (None: CUDA's default)."""
    import SimpleITK as sitk
    import torch

    from rt_resources.segmentation.nnunet_compat import register_trainers

    if device == "gpu" and not torch.cuda.is_available():
        from rt_resources.segmentation.totalseg import DeviceUnavailable

        raise DeviceUnavailable(f"model {model.name}: device 'gpu' asked for but torch sees no CUDA device")
    # importing totalsegmentator.nnunet patches nnU-Net's trainer lookup to consult the registered
    # classes first (the full scan imports torchvision, which fails beside a CPU torch)
    register_trainers()
    if device == "gpu" and device_index is not None:
        from rt_resources.segmentation.totalseg import use_cuda_index

        torch_device = torch.device("cuda", use_cuda_index(device_index))
    else:
        torch_device = torch.device("cuda" if device == "gpu" else "cpu")
    predictor = new_predictor(torch_device, 0.5)
    predictor.initialize_from_trained_model_folder(
        str(model.trained_folder), use_folds=model.folds, checkpoint_name=model.checkpoint
    )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    image, props = _read_for_nnunet(ct_path)
    labels = predictor.predict_single_npy_array(image, props, None, None, False)
    seconds = time.perf_counter() - start
    ct = sitk.ReadImage(str(ct_path))
    labels = np.asarray(labels)
    masks = {}
    for value, name in sorted(model.labels.items()):
        mask = sitk.GetImageFromArray((labels == value).astype(np.uint8))
        mask.CopyInformation(ct)
        path = out_dir / f"{name}.nii.gz"
        sitk.WriteImage(mask, str(path), True)
        masks[name] = path
    return masks, seconds


def _read_for_nnunet(ct_path: Path):
    """The CT as nnU-Net's SimpleITKIO reads it: (1, z, y, x) float32 and its properties."""
    from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO

    return SimpleITKIO().read_images([str(ct_path)])


def new_predictor(torch_device, tile_step_size: float):
    """nnU-Net's predictor as TotalSegmentator sets it up: Gaussian tile weighting, no mirroring
    (test-time augmentation off), everything on the device when it is a GPU, no progress bars."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    return nnUNetPredictor(
        tile_step_size=tile_step_size,
        use_gaussian=True,
        use_mirroring=False,
        perform_everything_on_device=torch_device.type == "cuda",
        device=torch_device,
        verbose=False,
        verbose_preprocessing=False,
        allow_tqdm=False,
    )
