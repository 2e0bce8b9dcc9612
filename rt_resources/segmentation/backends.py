"""The models a segmentation worker (:mod:`rt_resources.segmentation.worker`) holds in memory.

Each model takes the prepared input (the CT in the closest canonical orientation at the model's
spacing, :func:`rt_resources.segmentation.totalseg.prepare_input`) and writes one label map on the
same grid, with TotalSegmentator's label numbers of the task (``class_map[task]``).

* :class:`TotalSegModel`: nnU-Net's predictor for each model (part) of the task, initialised once
  from the checkpoints under ``TOTALSEG_HOME_DIR``, as TotalSegmentator's own ``nnUNetv2_predict``
  sets it up (Gaussian weighting, no mirroring, tile step 0.8 for the ``total`` tasks, fold 0,
  ``checkpoint_final.pth``), run per request with ``predict_from_files_sequential`` (no worker
  pools); the parts' labels are mapped to the task's labels with TotalSegmentator's part maps.
* :class:`StandinModel`: the stand-in of :mod:`rt_resources.segmentation.standin` (organ-shaped
  masks with TotalSegmentator's class names, for installations without the official weights),
  after sleeping ``standin_seconds`` as its "inference".
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from rt_resources.segmentation.worker import ModelSpec


def load_model(spec: ModelSpec, device: str) -> Any:
    """The model of ``spec`` on ``device`` (``cpu`` or ``cuda:N``), loaded once per worker."""
    if spec.backend == "standin":
        return StandinModel(spec)
    if spec.backend == "totalsegmentator":
        return TotalSegModel(spec, device)
    raise ValueError(f"unknown segmentation backend {spec.backend!r} (totalsegmentator | standin)")


class StandinModel:
    def __init__(self, spec: ModelSpec) -> None:
        import SimpleITK  # noqa: F401 -- loading is the imports: counted as the model's load time

        from rt_resources.segmentation import standin  # noqa: F401

        self.seconds = float(spec.standin_seconds)

    def predict(self, input_path: Path, output_path: Path) -> list[str]:
        import SimpleITK as sitk

        from rt_resources.fileio import atomic_path
        from rt_resources.segmentation.standin import standin_labelmap

        deadline = time.monotonic() + self.seconds
        image = sitk.ReadImage(str(input_path))
        labels, _ = standin_labelmap(image)
        out = sitk.GetImageFromArray(labels.astype(np.uint8))
        out.CopyInformation(image)
        time.sleep(max(0.0, deadline - time.monotonic()))  # the simulated inference time, reading included
        with atomic_path(Path(output_path)) as tmp:
            sitk.WriteImage(out, str(tmp), True)
        return ["stand-in segmentation (no official weights): organ-shaped masks, not a model's prediction"]


def _part_task_id(model_folder: Path) -> int:
    """``Dataset291_...`` -> 291."""
    name = model_folder.parent.parent.name
    return int(name.split("_", 1)[0].removeprefix("Dataset"))


class TotalSegModel:
    def __init__(self, spec: ModelSpec, device: str) -> None:
        from rt_resources.segmentation.nnunet_compat import expected_model_folders, prepare_totalsegmentator_runtime

        home = Path(spec.home)
        prepare_totalsegmentator_runtime(home)
        import torch
        from totalsegmentator.map_to_binary import class_map, class_map_5_parts, map_taskid_to_partname_ct

        from rt_resources.segmentation.nnunet_models import new_predictor

        if device.startswith("cuda"):
            from rt_resources.segmentation.totalseg import DeviceUnavailable

            index = int(device.split(":")[1])
            if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                raise DeviceUnavailable(
                    f"device {device} was asked for but torch sees {torch.cuda.device_count()} CUDA device(s); "
                    "use --totalseg-device cpu (slow) or run on a machine with a GPU"
                )
            torch.cuda.set_device(index)
            torch_device = torch.device("cuda", index)
        else:
            torch_device = torch.device("cpu")
        step = 0.8 if spec.task in ("total", "total_v3", "total_mr") else 0.5
        inverse = {name: label for label, name in class_map[spec.task].items()}
        self.parts: list[tuple[Any, np.ndarray | None]] = []
        folders = expected_model_folders(home, spec.task, spec.fast)
        for folder in folders:
            predictor = new_predictor(torch_device, step)
            predictor.initialize_from_trained_model_folder(
                str(folder.parent), use_folds=(int(folder.name.split("_")[1]),), checkpoint_name="checkpoint_final.pth"
            )
            lut = None
            if len(folders) > 1:  # a multi-part task: each part's labels -> the task's labels
                part_map = class_map_5_parts[map_taskid_to_partname_ct[_part_task_id(folder)]]
                lut = np.zeros(max(part_map) + 1, dtype=np.uint8)
                for label, name in part_map.items():
                    lut[label] = inverse[name]
            self.parts.append((predictor, lut))

    def predict(self, input_path: Path, output_path: Path) -> list[str]:
        import nibabel as nib

        from rt_resources.fileio import atomic_path

        image = nib.load(str(input_path))
        combined = None
        with tempfile.TemporaryDirectory(prefix="rtseg-") as tmp:
            for n, (predictor, lut) in enumerate(self.parts):
                truncated = str(Path(tmp) / f"part{n}")
                predictor.predict_from_files_sequential([[str(input_path)]], [truncated], False, True, None)
                seg = np.asanyarray(nib.load(truncated + ".nii.gz").dataobj).astype(np.uint8)
                if lut is not None:
                    if seg.size and seg.max() >= len(lut):
                        lut = np.pad(lut, (0, int(seg.max()) + 1 - len(lut)))
                    seg = lut[seg]
                if combined is None:
                    combined = seg
                else:
                    np.copyto(combined, seg, where=seg != 0)
        out = nib.Nifti1Image(combined, image.affine)
        out.header.set_data_dtype(np.uint8)
        with atomic_path(Path(output_path)) as target:
            nib.save(out, str(target))
        return []
