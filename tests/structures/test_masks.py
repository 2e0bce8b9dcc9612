"""ROIs rasterized onto the CT grid: known polygons, image edge, patient positions, holes."""

import numpy as np
import pytest
import SimpleITK as sitk

from rt_resources.imaging.ct_series import read_ct_volume, validate_ct_series
from rt_resources.structures.masks import write_masks
from rt_resources.structures.names import sanitize_roi_names
from rt_resources.structures.rasterize import fill_polygons, rasterize_contours
from rt_resources.structures.rtstruct import read_rois
from rt_resources.synthetic.analytic import write_analytic_course


@pytest.fixture(scope="module", params=["HFS", "FFS"])
def analytic(request, tmp_path_factory):
    course = write_analytic_course(tmp_path_factory.mktemp(request.param), "gradient", patient_position=request.param)
    ct = read_ct_volume(validate_ct_series(sorted((course.folder / "CT").glob("*.dcm"))))
    rois = {r.name: r for r in read_rois(course.folder / "RTSTRUCT.dcm")}
    return course, ct, rois


def voxel_centres_mm(ct):
    nx, ny, nz = ct.GetSize()
    k, j, i = np.meshgrid(np.arange(nz), np.arange(ny), np.arange(nx), indexing="ij")
    idx = np.stack([i, j, k], -1).reshape(-1, 3).astype(float)
    d = np.asarray(ct.GetDirection()).reshape(3, 3)
    return (np.asarray(ct.GetOrigin()) + (idx * ct.GetSpacing()) @ d.T).reshape(nz, ny, nx, 3)


@pytest.mark.parametrize("name", ["Box", "EdgeBox", "Cylinder"])
def test_mask_matches_the_shape_voxel_by_voxel(analytic, name):
    """Every voxel whose centre is inside the analytic shape, on a contoured slice, and no other."""
    course, ct, rois = analytic
    mask = rasterize_contours(rois[name].contours, ct).mask.astype(bool)
    p = voxel_centres_mm(ct)
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    planes = np.isin(np.round(z, 3), np.round(course.contour_z[name], 3))
    if name == "Cylinder":
        inside = (x - 40) ** 2 + y**2 < 25**2
    elif name == "Box":
        inside = (x > -40) & (x < 20) & (y > -30) & (y < 30)
    else:  # EdgeBox: 106..126 mm in x (the last pixel centre is 127 mm), +-8 mm in y
        inside = (x > 106) & (x < 126) & (y > -8) & (y < 8)
    expected = inside & planes
    assert mask.sum() > 0
    assert (mask != expected).sum() <= 0.002 * expected.sum() + 2  # centres exactly on an edge may go either way


def test_left_is_plus_x_for_any_position(analytic):
    course, ct, rois = analytic
    mask = rasterize_contours(rois["EdgeBox"].contours, ct).mask
    k, j, i = np.argwhere(mask).mean(axis=0)
    x_mm = ct.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))[0]
    assert x_mm > 100  # patient left (+x), whatever the orientation of the image rows


def test_empty_roi_is_reported_and_masks_are_written(analytic, tmp_path):
    course, ct, rois = analytic
    records = write_masks(list(rois.values()), ct, tmp_path)
    by_name = {r["roi_name"]: r for r in records}
    assert by_name["Empty"]["empty"] and by_name["Empty"]["file"] is None
    assert "no contours" in by_name["Empty"]["notes"][0]
    box = sitk.ReadImage(str(tmp_path / by_name["Box"]["file"]))
    assert box.GetSize() == ct.GetSize()
    np.testing.assert_allclose(box.GetOrigin(), ct.GetOrigin(), atol=1e-6)
    np.testing.assert_allclose(box.GetDirection(), ct.GetDirection(), atol=1e-6)
    assert by_name["Box"]["volume_cc"] == pytest.approx(course.expected["Box"].volume_cc, rel=1e-6)


def test_inner_contour_is_a_hole():
    outer = np.array([[0, 0], [20, 0], [20, 20], [0, 20]], float) - 0.5
    inner = np.array([[5, 5], [15, 5], [15, 15], [5, 15]], float) - 0.5
    filled = fill_polygons([outer, inner], (20, 20))
    assert filled.sum() == 400 - 100
    assert not filled[10, 10] and filled[2, 2]


def test_roi_file_names_are_safe_and_unique():
    names = ["GTV 1", "GTV/1", "../../etc/passwd", "Lt Lung", "", "gtv_1"]
    stems = sanitize_roi_names(names)
    assert len(set(s.lower() for s in stems.values())) == len(names)
    for stem in stems.values():
        assert "/" not in stem and not stem.startswith(".") and stem
