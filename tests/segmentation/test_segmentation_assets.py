"""Segmentation assets through the real TotalSegmentator / nnU-Net code paths, with a tiny
locally built model (the official weights cannot be downloaded here; random weights give
arbitrary masks, which is all these tests need)."""

import json
import shutil

import pandas as pd
import pydicom
import pytest
import SimpleITK as sitk
from dagster import AssetKey, materialize

from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.dose_grid import dose_grid
from rt_assets.assets.course.dvh import dvh
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.assets.course.totalseg_input import totalseg_input
from rt_assets.assets.derived.ct_crop import ct_crop
from rt_assets.assets.derived.totalseg_masks import totalseg_masks
from rt_assets.assets.derived.totalseg_rtstruct import totalseg_rtstruct
from rt_assets.assets.segmentation.nnunet_models import nnunet_model_asset
from rt_assets.assets.segmentation.totalseg_inference import totalseg_inference
from rt_assets.partitions import course_partitions
from rt_resources.ingest.survey import survey_drop
from rt_resources.resources import SegmentationConfig, TotalSegmentator
from rt_resources.segmentation.nnunet_models import load_model
from rt_resources.segmentation.tiny_model import build_tiny_totalseg_model
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL

COURSE = [course_manifest, ct_image, dose_grid, structure_masks, dvh]
TOTALSEG = [totalseg_input, totalseg_inference, totalseg_masks, totalseg_rtstruct]


@pytest.fixture(scope="module")
def tiny_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("totalseg_home")
    build_tiny_totalseg_model(home, "total_fast")
    return home


@pytest.fixture(autouse=True)
def no_lingering_worker(data_root):
    yield
    from rt_resources.resources import DataRoot
    from rt_resources.segmentation.worker import stop_worker

    stop_worker(DataRoot(path=str(data_root)).state(), "cpu")


@pytest.fixture
def course(drop, data_root, resources, instance):
    write_patient(drop, 0, SMALL)
    (key,) = [c.key for c in survey_drop(drop, data_root).courses]
    instance.add_dynamic_partitions(course_partitions.name, [key])
    assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
    return key


def seg_resources(resources, home, **config):
    return {
        **resources,
        "totalsegmentator": TotalSegmentator(home=str(home), device="cpu", fast=True, threads=1),
        "segmentation_config": SegmentationConfig(device="cpu", **config),
    }


def test_missing_weights_fail_fast_and_nothing_else_is_blocked(course, data_root, resources, instance, tmp_path):
    res = seg_resources(resources, tmp_path / "no_weights")
    prepared = materialize([totalseg_input], partition_key=course, instance=instance, resources=res)
    assert prepared.success and not prepared.asset_materializations_for_node("totalseg_input")  # a recorded skip
    result = materialize(
        [totalseg_inference], partition_key=course, instance=instance, resources=res, raise_on_error=False
    )
    assert not result.success
    message = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "weights" in message and "looked for" in message and str(tmp_path / "no_weights") in message
    assert "No download is attempted" in message
    # the course's own outputs are there and intact
    assert (data_root / "courses" / course / "dvh_metrics.parquet").exists()


def test_totalsegmentator_chain_with_tiny_model(course, data_root, resources, instance, tiny_home):
    res = seg_resources(resources, tiny_home)
    assert materialize(TOTALSEG, partition_key=course, instance=instance, resources=res).success
    course_dir = data_root / "courses" / course
    folder = course_dir / "masks" / "totalseg"
    from totalsegmentator.map_to_binary import class_map

    index = json.loads((folder / "rois.json").read_text())
    assert [r["roi_name"] for r in index] == list(class_map["total"].values())  # TotalSegmentator's own names
    names = {p.name[: -len(".nii.gz")] for p in folder.glob("*.nii.gz")}
    assert names == {r["roi_name"] for r in index if not r["empty"]}  # a file per non-empty class
    ct = sitk.ReadImage(str(course_dir / "ct.nii.gz"))
    some = sitk.ReadImage(str(folder / f"{sorted(names)[0]}.nii.gz"))
    assert some.GetSize() == ct.GetSize() and some.GetPixelID() == sitk.sitkUInt8
    assert some.GetOrigin() == pytest.approx(ct.GetOrigin()) and some.GetDirection() == pytest.approx(ct.GetDirection())
    inference = instance.fetch_materializations(AssetKey("totalseg_inference"), limit=1).records[0]
    inference = inference.asset_materialization
    assert inference.metadata["device"].value == "cpu" and inference.metadata["load_s"].value > 0
    assert len(inference.metadata["input_sha256"].value["model_checkpoint"]) == 64
    mat = instance.fetch_materializations(AssetKey("totalseg_masks"), limit=1).records[0].asset_materialization
    # exported RTSTRUCT references the course's CT
    rtstruct = pydicom.dcmread(course_dir / "rtstruct_totalseg.dcm")
    manifest = json.loads((course_dir / "manifest.json").read_text())
    series = rtstruct.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0].RTReferencedSeriesSequence[0]
    assert series.SeriesInstanceUID == manifest["ct_series_uid"]
    assert len(rtstruct.StructureSetROISequence) == mat.metadata["n_non_empty"].value > 0

    # the DVH picks the auto structures up (source totalseg, mask-based), beside the manual ones
    assert materialize([dvh], partition_key=course, instance=instance, resources=res).success
    metrics = pd.read_parquet(course_dir / "dvh_metrics.parquet")
    auto = metrics[metrics["source"] == "totalseg"]
    assert len(auto) == mat.metadata["n_non_empty"].value and (auto["method"] == "mask").all()
    assert (metrics["source"] == "manual").any()

    # cropping needs landmarks: random weights give arbitrary masks, so a configured region
    # either crops (bounds recorded) or fails naming the missing classes
    pelvis = seg_resources(resources, tiny_home, crop_regions=["pelvis"])
    crop = materialize([ct_crop], partition_key=course, instance=instance, resources=pelvis, raise_on_error=False)
    if not crop.success:
        message = next(e for e in crop.all_events if e.is_step_failure).step_failure_data.error.message
        assert "pelvis" in message and "missing or empty" in message
    else:
        assert (course_dir / "crops" / "pelvis" / "ct.nii.gz").exists()
        assert not list((course_dir / "masks").glob("*crop*"))  # crops never beside full-size masks


def _tiny_model_folder(tiny_home, models):
    """A custom model folder (model.yaml + the tiny nnU-Net training output) under ``models``."""
    model_dir = models / "tinyorgans"
    trained = next((tiny_home / "nnunet" / "results").glob("Dataset297*"))
    shutil.copytree(trained, model_dir / trained.name)
    trainer_folder = next(trained.iterdir()).name
    trainer, plans, configuration = trainer_folder.split("__")
    (model_dir / "model.yaml").write_text(
        f"name: tinyorgans\ndataset: {trained.name}\ntrainer: {trainer}\nplans: {plans}\n"
        f"configuration: {configuration}\nfolds: [0]\nlabels: {{1: spleen, 5: liver}}\n"
    )
    return model_dir


def test_models_dir_unset_means_no_custom_models(tiny_home, tmp_path, monkeypatch):
    """Regression: an unset RT_MODELS_DIR once became Path("."), and model folders were looked
    for in whatever directory the code location started in."""
    from rt_resources.segmentation.availability import segmentation_availability
    from rt_resources.settings import load_settings

    _tiny_model_folder(tiny_home, tmp_path)  # a model folder in the working directory
    monkeypatch.chdir(tmp_path)
    assert segmentation_availability(load_settings(environ={})).models == ()
    found = segmentation_availability(load_settings(environ={"RT_MODELS_DIR": str(tmp_path)})).models
    assert [m.name for m in found] == ["tinyorgans"]


def test_custom_nnunet_model_asset(course, data_root, resources, instance, tiny_home, tmp_path):
    model = load_model(_tiny_model_folder(tiny_home, tmp_path / "models"))
    asset = nnunet_model_asset(model)
    res = seg_resources(resources, tiny_home)
    assert materialize([asset], partition_key=course, instance=instance, resources=res).success
    folder = data_root / "courses" / course / "masks" / "tinyorgans"
    assert {p.name for p in folder.glob("*.nii.gz")} == {"spleen.nii.gz", "liver.nii.gz"}
    ct = sitk.ReadImage(str(data_root / "courses" / course / "ct.nii.gz"))
    assert sitk.ReadImage(str(folder / "liver.nii.gz")).GetSize() == ct.GetSize()


def test_bad_model_yaml_is_named(tmp_path):
    from rt_resources.segmentation.nnunet_models import ModelError

    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.yaml").write_text("name: x\n")
    with pytest.raises(ModelError, match=r"model.yaml: missing field\(s\) \['dataset', 'labels'\]"):
        load_model(tmp_path / "m")


def _label_map(data_root, course, labels: dict[str, tuple]) -> None:
    """Write a label map on the model's grid (the prepared input's) with each class's box set."""
    from totalsegmentator.map_to_binary import class_map

    paths = data_root / "courses" / course / "segmentation"
    image = sitk.ReadImage(str(paths / "totalseg_input.nii.gz"))
    arr = sitk.GetArrayFromImage(image).astype("uint8") * 0
    label_of = {name: label for label, name in class_map["total"].items()}
    for name, box in labels.items():
        arr[box] = label_of[name]
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(image)
    sitk.WriteImage(out, str(paths / "totalseg_labels.nii.gz"), True)


@pytest.mark.parametrize("partial", [False, True], ids=["empty", "partial"])
def test_empty_or_partial_segmentation_leaves_the_course_whole(course, data_root, resources, instance, partial):
    """A segmentation that returns no class, or only some: the masks, RTSTRUCT and DVH steps still
    succeed, and the check says what is missing."""
    res = {**resources, "totalsegmentator": TotalSegmentator(home="", device="cpu", backend="standin")}
    assert materialize([totalseg_input], partition_key=course, instance=instance, resources=res).success
    # boxes of 30 x 60 x 60 mm on the 1.5 mm model grid: whole voxels of the coarse test CT
    boxes = {
        "vertebrae_T8": (slice(10, 30), slice(60, 100), slice(20, 60)),
        "liver": (slice(10, 30), slice(60, 100), slice(120, 160)),
    }
    _label_map(data_root, course, boxes if partial else {})
    after = [totalseg_masks, totalseg_rtstruct, dvh]
    assert materialize(after, partition_key=course, instance=instance, resources=res).success
    folder = data_root / "courses" / course / "masks" / "totalseg"
    index = json.loads((folder / "rois.json").read_text())
    assert len(index) == 117 and {r["roi_name"] for r in index if not r["empty"]} == (set(boxes) if partial else set())
    qc = json.loads((data_root / "courses" / course / "qc.json").read_text())
    result = next(r for r in qc["results"] if r["name"] == "autoseg_completeness")
    assert not result["passed"] and result["severity"] == "WARN"
    if partial:
        assert "heart" in result["description"] and "lungs" in result["description"]  # expected at T8, missing
    else:
        assert "no vertebra" in result["description"]
    metrics = pd.read_parquet(data_root / "courses" / course / "dvh_metrics.parquet")
    assert (metrics.source == "manual").any()
    assert set(metrics.loc[metrics.source == "totalseg", "roi_name"]) == (set(boxes) if partial else set())
