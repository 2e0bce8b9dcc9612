"""Course preview images: CT montage, DVH plot and their markdown embedding."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from PIL import Image

from rt_resources.qc.previews.dvh_plot import dvh_plot_png
from rt_resources.qc.previews.montage import ct_montage_png
from rt_resources.qc.previews.render import png_markdown
from rt_resources.synthetic import SynthOptions, write_patient

OPTS = SynthOptions(rows=48, slices=24, pixel_mm=8, slice_mm=8)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> dict[str, Path]:
    """A synthetic course as the pipeline writes it: ct.nii.gz, dose.nii.gz (its own grid), masks/manual."""
    from rt_resources.dose.rtdose import read_rtdose
    from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
    from rt_resources.structures.masks import ROI_INDEX_FILE, write_masks
    from rt_resources.structures.rtstruct import read_rois

    root = tmp_path_factory.mktemp("course")
    patient = write_patient(root / "drop", 0, OPTS)
    files = patient.courses[0].files
    ct = read_ct_volume(validate_ct_series(sorted(f.path for f in files if f.modality == "CT")))
    sitk.WriteImage(ct, str(root / "ct.nii.gz"), True)
    manual = root / "masks" / "manual"
    manual.mkdir(parents=True)
    records = write_masks(read_rois(next(f.path for f in files if f.modality == "RTSTRUCT")), ct, manual)
    (manual / ROI_INDEX_FILE).write_text(json.dumps(records))
    dose = read_rtdose(next(f.path for f in files if f.modality == "RTDOSE")).image
    assert dose.GetSize() != ct.GetSize() and dose.GetSpacing() != ct.GetSpacing()  # the dose has its own grid
    sitk.WriteImage(dose, str(root / "dose.nii.gz"), True)
    return {"root": root, "ct": root / "ct.nii.gz", "dose": root / "dose.nii.gz", "manual": manual}


def _centroid_mm(mask_path: Path) -> np.ndarray:
    image = sitk.ReadImage(str(mask_path))
    k, j, i = (float(np.mean(a)) for a in np.nonzero(sitk.GetArrayFromImage(image)))
    return np.array(image.TransformContinuousIndexToPhysicalPoint((i, j, k)))


def _png(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def _chroma(rgb: np.ndarray) -> np.ndarray:
    """max - min over the colour channels: 0 for grey pixels."""
    return rgb.max(axis=-1) - rgb.min(axis=-1)


def _panel(rgb: np.ndarray, result: dict, plane: str = "axial", inset: int = 25) -> np.ndarray:
    """The pixels of one image panel, without the orientation letters at its edges."""
    left, top, right, bottom = result["panels"][plane]["bbox_px"]
    return rgb[top + inset : bottom - inset, left + inset : right - inset]


def _centre_pixel(rgb: np.ndarray, result: dict, plane: str = "axial") -> np.ndarray:
    col, row = result["panels"][plane]["centre_px"]
    return rgb[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3)


def test_montage_with_dose_and_masks(course, tmp_path):
    out = tmp_path / "preview" / "montage.png"
    result = ct_montage_png(
        course["ct"], out, manual_masks_dir=course["manual"], dose_path=course["dose"], prescription_gy=60.0
    )
    assert out.is_file() and result["path"] == str(out)
    assert sorted(p.name for p in out.parent.iterdir()) == ["montage.png"]  # no temporary file left
    assert out.stat().st_size < 300_000
    rgb = _png(out)
    assert rgb.shape[:2] == (result["height_px"], result["width_px"])
    assert 1200 <= result["width_px"] <= 1800 and 400 <= result["height_px"] <= 700
    assert result["centre_from"] == "PTV"
    spacing = np.array(sitk.ReadImage(str(course["ct"])).GetSpacing())
    offset = np.abs(np.array(result["centre_mm"]) - _centroid_mm(course["manual"] / "PTV.nii.gz"))
    assert np.all(offset <= spacing), offset
    assert result["n_contours"] == 7 and "manual/PTV" in result["rois_shown"]
    assert result["dose_max_gy"] == pytest.approx(60.0, rel=0.01)
    # the dose wash covers the target centre: coloured, not grey
    assert np.all(_chroma(_centre_pixel(rgb, result)) > 20), _centre_pixel(rgb, result)
    assert np.all(_chroma(_centre_pixel(rgb, result, "coronal")) > 20)
    assert np.all(_chroma(_centre_pixel(rgb, result, "sagittal")) > 20)


def test_montage_without_dose_is_grey_plus_contours(course, tmp_path):
    bare = ct_montage_png(course["ct"], tmp_path / "bare.png")
    assert bare["centre_from"] == "image centre" and bare["n_contours"] == 0 and bare["dose_max_gy"] is None
    panel = _panel(_png(tmp_path / "bare.png"), bare)
    assert panel.size and np.all(_chroma(panel) <= 2)  # the CT alone: grey everywhere

    result = ct_montage_png(course["ct"], tmp_path / "contours.png", manual_masks_dir=course["manual"])
    rgb = _png(tmp_path / "contours.png")
    assert result["centre_from"] == "PTV" and result["n_contours"] == 7
    assert np.all(_chroma(_centre_pixel(rgb, result)) <= 2)  # no dose: grey inside the PTV
    coloured = np.mean(_chroma(_panel(rgb, result)) > 20)
    assert 0.002 < coloured < 0.08, coloured  # thin outlines only


def test_montage_auto_masks_on_another_grid_and_target_hint(course, tmp_path):
    """A totalseg mask on a finer, shifted grid is resampled onto the CT; the hint picks the centre."""
    heart = sitk.ReadImage(str(course["manual"] / "Heart.nii.gz"))
    fine = sitk.Image([int(n * 2) for n in heart.GetSize()], sitk.sitkUInt8)
    fine.SetSpacing([s / 2 for s in heart.GetSpacing()])
    fine.SetOrigin([o - 1.5 for o in heart.GetOrigin()])
    auto = tmp_path / "totalseg"
    auto.mkdir()
    sitk.WriteImage(sitk.Resample(heart, fine, sitk.Transform(), sitk.sitkNearestNeighbor), str(auto / "heart.nii.gz"))
    (auto / "rois.json").write_text(json.dumps([{"roi_name": "heart", "file": "heart.nii.gz"}]))
    result = ct_montage_png(
        course["ct"],
        tmp_path / "m.png",
        manual_masks_dir=course["manual"],
        auto_masks_dirs={"totalseg": auto},
        dose_path=course["dose"],
        target_hint="heart",
    )
    assert result["centre_from"] == "Heart"  # manual masks only; case-insensitive
    assert "totalseg/heart" in result["rois_shown"] and result["n_contours"] == 8
    offset = np.abs(np.array(result["centre_mm"]) - _centroid_mm(course["manual"] / "Heart.nii.gz"))
    assert np.all(offset <= np.array(heart.GetSpacing()))


def test_montage_target_choice_skips_empty_masks(course, tmp_path):
    masks = tmp_path / "manual"
    masks.mkdir()
    ptv = sitk.ReadImage(str(course["manual"] / "PTV.nii.gz"))
    sitk.WriteImage(ptv * 0, str(masks / "PTV_empty.nii.gz"))
    sitk.WriteImage(sitk.Resample(ptv, ptv, sitk.Transform(), sitk.sitkNearestNeighbor, 0), str(masks / "ctv.nii.gz"))
    (masks / "rois.json").write_text(
        json.dumps(
            [
                {"roi_name": "PTV 1", "file": "PTV_empty.nii.gz"},
                {"roi_name": "PTV 2", "file": None},  # an ROI without contours has no file
                {"roi_name": "CTV", "file": "ctv.nii.gz"},
            ]
        )
    )
    result = ct_montage_png(course["ct"], tmp_path / "m.png", manual_masks_dir=masks)
    assert result["centre_from"] == "CTV" and result["rois_shown"] == ["manual/CTV"]

    dose_only = ct_montage_png(course["ct"], tmp_path / "d.png", dose_path=course["dose"])
    assert dose_only["centre_from"] == "dose max"
    index = ptv.TransformPhysicalPointToIndex(dose_only["centre_mm"])
    assert ptv[index] == 1  # the dose maximum lies in the PTV

    missing = ct_montage_png(
        course["ct"], tmp_path / "n.png", manual_masks_dir=tmp_path / "nope", dose_path=tmp_path / "nope.nii.gz"
    )
    assert missing["centre_from"] == "image centre" and missing["notes"] == ["no dose file"]


def test_montage_one_slice_image(course, tmp_path):
    ct = sitk.ReadImage(str(course["ct"]))
    ptv = sitk.ReadImage(str(course["manual"] / "PTV.nii.gz"))
    k = int(round(ct.TransformPhysicalPointToContinuousIndex(_centroid_mm(course["manual"] / "PTV.nii.gz"))[2]))
    sitk.WriteImage(ct[:, :, k : k + 1], str(tmp_path / "ct.nii.gz"))
    masks = tmp_path / "manual"
    masks.mkdir()
    sitk.WriteImage(ptv[:, :, k : k + 1], str(masks / "PTV.nii.gz"))
    result = ct_montage_png(
        tmp_path / "ct.nii.gz", tmp_path / "m.png", manual_masks_dir=masks, dose_path=course["dose"]
    )
    rgb = _png(tmp_path / "m.png")
    assert rgb.shape[:2] == (result["height_px"], result["width_px"])
    assert result["centre_from"] == "PTV" and result["n_contours"] == 1
    assert result["panels"]["axial"]["index"] == 0
    assert result["centre_mm"][2] == pytest.approx(ct.TransformIndexToPhysicalPoint((0, 0, k))[2])
    assert np.all(_chroma(_centre_pixel(rgb, result)) > 20)


def test_montage_does_not_depend_on_voxel_order(course, tmp_path):
    """CT, masks and dose stored in another orientation (axes swapped and flipped) give the same picture."""

    def turn(src: Path, dst: Path) -> None:
        image = sitk.ReadImage(str(src))
        turned = sitk.Flip(sitk.PermuteAxes(image, [1, 0, 2]), [True, False, True])
        assert turned.GetDirection() != image.GetDirection()
        sitk.WriteImage(turned, str(dst))

    masks = tmp_path / "manual"
    masks.mkdir()
    for path in course["manual"].glob("*.nii.gz"):
        turn(path, masks / path.name)
    (masks / "rois.json").write_text((course["manual"] / "rois.json").read_text())
    turn(course["ct"], tmp_path / "ct.nii.gz")
    turn(course["dose"], tmp_path / "dose.nii.gz")
    a = ct_montage_png(course["ct"], tmp_path / "a.png", manual_masks_dir=course["manual"], dose_path=course["dose"])
    b = ct_montage_png(
        tmp_path / "ct.nii.gz", tmp_path / "b.png", manual_masks_dir=masks, dose_path=tmp_path / "dose.nii.gz"
    )
    assert b["centre_mm"] == pytest.approx(a["centre_mm"], abs=1e-3) and a["panels"] == b["panels"]
    assert a["rois_shown"] == b["rois_shown"]
    differ = np.any(_png(tmp_path / "a.png") != _png(tmp_path / "b.png"), axis=-1)
    assert differ.mean() < 0.001, differ.mean()


def test_montage_radiological_orientation(tmp_path):
    """Patient left on image right, anterior at the top, superior at the top; spacing sets the aspect."""
    shape = (20, 30, 40)  # z, y, x
    arr = np.full(shape, -1000, np.int16)
    arr[:, :, 30:] = 200  # patient left (x large): bright
    arr[:, :5, :] = 100  # anterior (y small)
    arr[15:, :, :] = 0  # superior (z large)
    ct = sitk.GetImageFromArray(arr)
    ct.SetSpacing((1.0, 1.0, 4.0))  # slices four times thicker than pixels
    sitk.WriteImage(ct, str(tmp_path / "ct.nii.gz"))
    result = ct_montage_png(tmp_path / "ct.nii.gz", tmp_path / "m.png")
    rgb = _png(tmp_path / "m.png")
    left, top, right, bottom = result["panels"]["axial"]["bbox_px"]
    axial = rgb[top:bottom, left:right, 0]
    h, w = axial.shape
    assert axial[h // 2, int(w * 0.9)] > 200 and axial[h // 2, int(w * 0.3)] < 30  # left of patient on the right
    assert axial[int(h * 0.08), int(w * 0.3)] > axial[int(h * 0.9), int(w * 0.3)]  # anterior at the top
    assert (right - left) / (bottom - top) == pytest.approx(40 / 30, rel=0.03)
    left, top, right, bottom = result["panels"]["coronal"]["bbox_px"]
    assert (right - left) / (bottom - top) == pytest.approx(40 / 80, rel=0.03)  # 20 slices x 4 mm
    coronal = rgb[top:bottom, left:right, 0]
    h, w = coronal.shape
    assert coronal[int(h * 0.1), int(w * 0.3)] > coronal[int(h * 0.9), int(w * 0.3)]  # superior at the top


def test_dvh_plot(tmp_path):
    dose = np.linspace(0.0, 66.0, 100)
    rows = []
    for n, roi in enumerate(["PTV", "Heart", "Lung_L"]):
        for source in ("manual", "totalseg") if roi != "PTV" else ("manual",):
            volume = 100.0 / (1.0 + np.exp((dose - 60.0 + 15 * n) / 2.0))
            rows.append(
                pd.DataFrame(
                    {
                        "course_key": "c-000000000000",
                        "roi_name": roi,
                        "source": source,
                        "dose_gy": dose,
                        "volume_cc": volume,
                        "volume_pct": volume,
                    }
                )
            )
    curves = pd.concat(rows, ignore_index=True)
    result = dvh_plot_png(curves, tmp_path / "dvh.png", prescription_gy=60.0, title="course c-000000000000")
    assert result["n_curves"] == 5
    rgb = _png(tmp_path / "dvh.png")
    assert rgb.shape[:2] == (result["height_px"], result["width_px"])
    assert np.mean(_chroma(rgb) > 50) > 0.001  # coloured lines

    many = pd.concat([curves.assign(roi_name=curves.roi_name + f"_{i}") for i in range(10)], ignore_index=True)
    assert dvh_plot_png(many, tmp_path / "many.png")["n_curves"] == 50

    empty = dvh_plot_png(pd.DataFrame(columns=curves.columns), tmp_path / "empty.png")
    assert empty["n_curves"] == 0
    blank = _png(tmp_path / "empty.png")
    assert np.mean(blank == 255) > 0.95  # a white page that says "no DVH"


def test_png_markdown(course, tmp_path):
    out = tmp_path / "m.png"
    ct_montage_png(course["ct"], out)
    text = png_markdown(out, alt="CT [montage]")
    assert text.startswith("![CT montage](data:image/png;base64,") and text.endswith(")")
    assert base64.b64decode(text.split("base64,", 1)[1][:-1]) == out.read_bytes()
    small = png_markdown(out, max_width_px=400)
    with Image.open(io.BytesIO(base64.b64decode(small.split("base64,", 1)[1][:-1]))) as image:
        assert image.format == "PNG" and image.width == 400
    assert len(small) < len(text)


def test_import_is_light():
    modules = ", ".join(f"rt_resources.qc.previews.{m}" for m in ("montage", "plane", "overlays", "dvh_plot", "render"))
    code = f"import sys, {modules}; print(sorted({{'matplotlib', 'SimpleITK', 'skimage'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
