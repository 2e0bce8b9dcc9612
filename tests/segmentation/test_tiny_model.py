"""The tiny random nnU-Net model drives the real TotalSegmentator Python API end to end (CPU, offline)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("totalsegmentator")
pytest.importorskip("nnunetv2")
sitk = pytest.importorskip("SimpleITK")

from rt_resources.segmentation.nnunet_compat import (  # noqa: E402
    prepare_totalsegmentator_runtime,
    register_trainer,
    totalseg_weights_present,
)
from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model, count_parameters  # noqa: E402

MODEL_REL = (
    "nnunet/results/Dataset297_TotalSegmentator_total_3mm_1559subj/"
    "nnUNetTrainer_4000epochs_NoMirroring__nnUNetPlans__3d_fullres"
)


@pytest.fixture
def isolated_env(monkeypatch):
    """prepare_totalsegmentator_runtime writes os.environ; record the originals so they are restored."""
    for var in ("TOTALSEG_HOME_DIR", "nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, "")
    monkeypatch.delenv("TOTALSEG_WEIGHTS_PATH", raising=False)


def write_phantom_ct(path: Path) -> sitk.Image:
    """64x64x48 voxels at 3 mm: air, a water cylinder, a bone-like blob and a contrast-like blob."""
    z, y, x = np.mgrid[:48, :64, :64]
    arr = np.full((48, 64, 64), -1000, np.int16)
    arr[(x - 32) ** 2 + (y - 32) ** 2 < 26**2] = 0
    arr[(x - 32) ** 2 + (y - 44) ** 2 < 5**2] = 700
    arr[(x - 22) ** 2 + (y - 28) ** 2 + (z - 20) ** 2 < 7**2] = 150
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((3.0, 3.0, 3.0))
    img.SetOrigin((-96.0, -120.5, 30.0))
    sitk.WriteImage(img, str(path))
    return img


def test_build_layout_and_weights_check(tmp_path):
    from totalsegmentator.map_to_binary import class_map

    home = tmp_path / "home"
    present, where = totalseg_weights_present(home, "total", True)
    assert not present
    assert where == home / MODEL_REL / "fold_0" / "checkpoint_final.pth"

    model_dir = build_tiny_totalseg_model(home)
    assert model_dir == home / MODEL_REL
    assert totalseg_weights_present(home, "total", True) == (True, where)
    assert not totalseg_weights_present(home, "total", False)[0]  # the 5-part 1.5 mm model is not there

    dataset = json.loads((model_dir / "dataset.json").read_text())
    assert dataset["labels"] == {"background": 0, **{name: idx for idx, name in class_map["total"].items()}}
    assert len(dataset["labels"]) == 118
    plans = json.loads((model_dir / "plans.json").read_text())
    assert plans["configurations"]["3d_fullres"]["spacing"] == [3.0, 3.0, 3.0]
    assert 10_000 <= count_parameters(model_dir) <= 50_000
    assert json.loads((home / "config.json").read_text())["send_usage_stats"] is False

    # same seed, same weights
    import torch

    other = build_tiny_totalseg_model(tmp_path / "other", seed=0)
    a = torch.load(model_dir / "fold_0/checkpoint_final.pth", weights_only=False)["network_weights"]
    b = torch.load(other / "fold_0/checkpoint_final.pth", weights_only=False)["network_weights"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    # a real model folder (dataset.json without the stand-in marker) is never overwritten
    real = json.loads((other / "dataset.json").read_text()) | {"name": "Dataset297_real"}
    (other / "dataset.json").write_text(json.dumps(real))
    with pytest.raises(FileExistsError):
        build_tiny_totalseg_model(tmp_path / "other")


def test_real_totalsegmentator_runs_on_tiny_model(tmp_path, isolated_env):
    from totalsegmentator.map_to_binary import class_map

    home = tmp_path / "home"
    build_tiny_totalseg_model(home)
    ct_path = tmp_path / "ct.nii.gz"
    ct = write_phantom_ct(ct_path)
    out_dir = tmp_path / "seg"

    prepare_totalsegmentator_runtime(home)
    prepare_totalsegmentator_runtime(home)  # idempotent
    from totalsegmentator.python_api import totalsegmentator

    from rt_resources.parallel import terminable_children

    with terminable_children():  # nnU-Net's pools are stopped with SIGTERM
        totalsegmentator(
            input=ct_path,
            output=out_dir,
            task="total",
            fast=True,
            device="cpu",
            ml=False,
            nr_thr_resamp=1,
            nr_thr_saving=1,
            quiet=True,
        )

    names = {p.name[: -len(".nii.gz")] for p in out_dir.glob("*.nii.gz")}
    assert names == set(class_map["total"].values())
    assert {"liver", "vertebrae_L1"} <= names
    for name in ("liver", "vertebrae_L1", "urinary_bladder"):
        mask = sitk.ReadImage(str(out_dir / f"{name}.nii.gz"))
        assert mask.GetSize() == ct.GetSize()
        assert np.allclose(mask.GetOrigin(), ct.GetOrigin(), atol=1e-3)
        assert np.allclose(mask.GetSpacing(), ct.GetSpacing(), atol=1e-3)
        assert np.allclose(mask.GetDirection(), ct.GetDirection(), atol=1e-3)
        assert set(np.unique(sitk.GetArrayViewFromImage(mask))) <= {0, 1}
    config = json.loads((home / "config.json").read_text())
    assert config["send_usage_stats"] is False
    assert config["prediction_counter"] == 1


def test_register_trainer_bypasses_the_package_scan():
    import nnunetv2.inference.predict_from_raw_data as predict_module
    from nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs_NoMirroring import (
        nnUNetTrainer_4000epochs_NoMirroring,
    )

    assert register_trainer("nnUNetTrainer_4000epochs_NoMirroring") is nnUNetTrainer_4000epochs_NoMirroring
    assert register_trainer("nnUNetTrainer_4000epochs_NoMirroring") is nnUNetTrainer_4000epochs_NoMirroring
    # this is the call that imports every trainer module (and crashes on CPU torch) when not registered
    found = predict_module.recursive_find_trainer_class_by_name("nnUNetTrainer_4000epochs_NoMirroring")
    assert found is nnUNetTrainer_4000epochs_NoMirroring
    with pytest.raises(LookupError):
        register_trainer("NoSuchTrainer_xyz")
