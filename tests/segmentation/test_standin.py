"""The TotalSegmentator stand-in on an in-memory body-like CT: classes, volumes, shape, placement, grids."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from rt_resources.segmentation.standin import STANDIN_EMPTY_CLASSES, standin_labelmap

BODY_SEMI_MM = (250.0, 175.0, 200.0)  # a 500 x 350 x 400 mm body (x, y, z)
MARGIN_MM = 10.0


def body_ct(spacing: tuple[float, float, float], flipped: bool = False) -> tuple[sitk.Image, np.ndarray]:
    """CT (HU) of an ellipsoidal soft-tissue body centred at the origin with two air-filled lungs
    inside, and its body mask (array order z, y, x). ``flipped``: feet-first orientation (rows run
    to the patient's right, slices from head to feet)."""
    size = [int(np.ceil(2 * (a + MARGIN_MM) / s)) for a, s in zip(BODY_SEMI_MM, spacing, strict=True)]
    sign = np.array([-1.0, 1.0, -1.0]) if flipped else np.ones(3)
    half = np.array([(n - 1) / 2 * s for n, s in zip(size, spacing, strict=True)])
    x, y, z = (sign[a] * (np.arange(size[a]) * spacing[a] - half[a]) for a in range(3))
    in_plane = (x[None, :] / BODY_SEMI_MM[0]) ** 2 + (y[:, None] / BODY_SEMI_MM[1]) ** 2
    body = in_plane[None, :, :] <= 1.0 - (z[:, None, None] / BODY_SEMI_MM[2]) ** 2
    hu = np.where(body, 40, -1000).astype(np.int16)
    for centre_x in (-100.0, 100.0):
        lung = ((x[None, :] - centre_x) / 70.0) ** 2 + (y[:, None] / 90.0) ** 2
        hu[lung[None, :, :] <= 1.0 - ((z[:, None, None] - 80.0) / 100.0) ** 2] = -800
    image = sitk.GetImageFromArray(hu)
    image.SetSpacing(spacing)
    image.SetDirection(tuple(np.diag(sign).ravel()))
    image.SetOrigin(tuple(sign * -half))
    return image, body


def volumes_cc(labels: np.ndarray, names: dict[int, str], image: sitk.Image) -> dict[str, float]:
    counts = np.bincount(labels.ravel(), minlength=max(names) + 1)
    voxel_cc = float(np.prod(image.GetSpacing())) / 1000.0
    return {name: counts[label] * voxel_cc for label, name in names.items()}


def centroids_mm(labels: np.ndarray, names: dict[int, str], image: sitk.Image) -> dict[str, np.ndarray]:
    """Patient coordinates (LPS, mm) of the centre of each non-empty class."""
    counts = np.bincount(labels.ravel(), minlength=max(names) + 1)
    present = [label for label in names if counts[label]]
    centres = ndimage.center_of_mass(np.ones_like(labels), labels, present)
    return {
        names[label]: np.array(image.TransformContinuousIndexToPhysicalPoint(c[::-1]))
        for label, c in zip(present, centres, strict=True)
    }


@pytest.fixture(scope="module")
def fine_centres(fine) -> dict[str, np.ndarray]:
    image, _, labels, names = fine
    return centroids_mm(labels, names, image)


@pytest.fixture(scope="module")
def fine():
    """The model grid: 1.5 mm isotropic (about 24 M voxels)."""
    image, body = body_ct((1.5, 1.5, 1.5))
    labels, names = standin_labelmap(image)
    return image, body, labels, names


@pytest.fixture(scope="module")
def coarse():
    image, body = body_ct((2.0, 2.0, 3.0))
    labels, names = standin_labelmap(image)
    return image, body, labels, names


def test_classes_are_totalsegmentators(fine):
    from totalsegmentator.map_to_binary import class_map

    image, _, labels, names = fine
    assert names == dict(class_map["total"])
    assert len(names) == 117
    assert set(STANDIN_EMPTY_CLASSES) <= set(names.values())
    assert labels.dtype == np.uint8
    assert labels.shape == sitk.GetArrayViewFromImage(image).shape


def test_about_a_hundred_classes_with_realistic_volumes(fine):
    image, _, labels, names = fine
    volumes = volumes_cc(labels, names, image)
    present = {name: v for name, v in volumes.items() if v > 0}
    assert len(present) >= 95
    assert set(names.values()) - set(present) == set(STANDIN_EMPTY_CLASSES)
    assert min(present.values()) >= 1.5
    assert max(present.values()) <= 2500.0
    assert 10_000.0 <= sum(present.values()) <= 15_000.0
    assert 1400.0 <= volumes["liver"] <= 2000.0
    for side in ("left", "right"):
        lung = sum(v for name, v in volumes.items() if name.startswith("lung_") and name.endswith(side))
        assert 1400.0 <= lung <= 2200.0, side


@pytest.mark.parametrize("grid", ["fine", "coarse"])
def test_every_class_is_one_connected_component(grid, request):
    _, _, labels, _ = request.getfixturevalue(grid)
    for label, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is not None:
            _, n = ndimage.label(labels[box] == label)
            assert n == 1, label


@pytest.mark.parametrize("grid", ["fine", "coarse"])
def test_labels_lie_inside_the_body(grid, request):
    _, body, labels, _ = request.getfixturevalue(grid)
    assert not (labels[~body] > 0).any()


def test_left_classes_on_the_patients_left(fine_centres):
    x = {name: c[0] for name, c in fine_centres.items()}  # DICOM LPS: +x is the patient's left
    sided = {name: v for name, v in x.items() if "_left" in name or "_right" in name}
    assert len(sided) >= 50
    assert all(v > 0 for name, v in sided.items() if "_left" in name)
    assert all(v < 0 for name, v in sided.items() if "_right" in name)
    assert x["liver"] < 0 < x["spleen"]


def test_organs_in_anatomical_order(fine_centres):
    centre_mm = fine_centres.__getitem__  # +y posterior, +z superior
    assert centre_mm("vertebrae_T8")[1] > centre_mm("heart")[1]
    assert centre_mm("sternum")[1] < centre_mm("heart")[1]
    assert centre_mm("thyroid_gland")[2] > centre_mm("heart")[2] > centre_mm("liver")[2]
    assert centre_mm("liver")[2] > centre_mm("urinary_bladder")[2]
    levels = [centre_mm(f"vertebrae_T{n}")[2] for n in range(1, 13)] + [
        centre_mm(f"vertebrae_L{n}")[2] for n in range(1, 6)
    ]
    assert np.all(np.diff(levels) < 0)  # T1 at the top, L5 at the bottom


def test_volumes_agree_across_grids(fine, coarse):
    small, large = (volumes_cc(labels, names, image) for image, _, labels, names in (fine, coarse))
    for name, v in small.items():
        assert large[name] == pytest.approx(v, rel=0.10, abs=0.3), name
    assert sum(large.values()) == pytest.approx(sum(small.values()), rel=0.02)


def test_orientation_is_read_from_the_image(coarse):
    image, body = body_ct((2.0, 2.0, 3.0), flipped=True)
    labels, names = standin_labelmap(image)
    assert not (labels[~body] > 0).any()
    x = {name: c[0] for name, c in centroids_mm(labels, names, image).items()}
    assert all(v > 0 for name, v in x.items() if "_left" in name)
    assert all(v < 0 for name, v in x.items() if "_right" in name)
    reference = volumes_cc(coarse[2], coarse[3], coarse[0])
    for name, v in volumes_cc(labels, names, image).items():
        assert v == pytest.approx(reference[name], rel=0.05, abs=0.3), name


def test_deterministic(coarse):
    image, _, labels, _ = coarse
    again, _ = standin_labelmap(image)
    assert np.array_equal(again, labels)


def test_no_body_gives_an_empty_map():
    air = sitk.Image([40, 30, 20], sitk.sitkInt16) - 1000
    labels, names = standin_labelmap(air)
    assert labels.shape == (20, 30, 40) and not labels.any()
    assert len(names) == 117


def test_needs_a_3d_image():
    with pytest.raises(ValueError, match="3D scalar CT"):
        standin_labelmap(sitk.Image([40, 30], sitk.sitkInt16))
