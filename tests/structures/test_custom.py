"""Custom structures: boolean ops, per-direction margins on HFS and FFS grids, YAML validation."""

import numpy as np
import pytest
import SimpleITK as sitk

from rt_resources.structures.custom import (
    CustomSpec,
    CustomStructureError,
    build_all,
    build_custom_structure,
    load_custom_structures,
)
from rt_resources.structures.margins import Margin

HFS = (1, 0, 0, 0, 1, 0, 0, 0, 1)
FFS = (-1, 0, 0, 0, 1, 0, 0, 0, -1)


def image(arr: np.ndarray, spacing=(1.0, 1.0, 1.0), direction=HFS, origin=(0.0, 0.0, 0.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(arr.astype(np.uint8))
    img.SetSpacing(spacing)
    img.SetDirection(direction)
    img.SetOrigin(origin)
    return img


def cube(lo: int, hi: int, n: int = 10) -> np.ndarray:
    arr = np.zeros((n, n, n), np.uint8)
    arr[lo:hi, lo:hi, lo:hi] = 1
    return arr


def points_mm(mask: sitk.Image) -> np.ndarray:
    """LPS coordinates (mm) of the centres of the non-zero voxels."""
    k, j, i = np.nonzero(sitk.GetArrayViewFromImage(mask))
    idx = np.stack([i, j, k], 1).astype(float) * mask.GetSpacing()
    return np.asarray(mask.GetOrigin()) + idx @ np.asarray(mask.GetDirection()).reshape(3, 3).T


@pytest.fixture
def masks_root(tmp_path):
    root = tmp_path / "masks"
    (root / "manual").mkdir(parents=True)
    (root / "totalseg").mkdir()
    sitk.WriteImage(image(cube(2, 6)), str(root / "manual" / "A.nii.gz"))  # 64 voxels
    sitk.WriteImage(image(cube(4, 8)), str(root / "totalseg" / "B.nii.gz"))  # 64 voxels, 8 shared with A
    sitk.WriteImage(image(cube(0, 0)), str(root / "manual" / "Empty.nii.gz"))
    return root


def test_boolean_ops_exact_counts(masks_root, tmp_path):
    yaml_file = tmp_path / "custom.yaml"
    yaml_file.write_text(
        """
structures:
  - {name: U, op: union, a: [manual/A], b: [totalseg/B]}
  - {name: U2, op: union, a: [manual/A, totalseg/B]}
  - {name: I, op: intersection, a: [manual/A], b: [totalseg/B]}
  - {name: S, op: subtract, a: [manual/A], b: [totalseg/B]}
  - {name: X, op: xor, a: [manual/A], b: [totalseg/B]}
  - {name: S_margin, op: subtract, a: [manual/A], b: [totalseg/B], margin_b_mm: 1}
  - {name: WithEmpty, op: union, a: [manual/A, manual/Empty]}
"""
    )
    specs = load_custom_structures(yaml_file)
    out = tmp_path / "out"
    records = {r["name"]: r for r in build_all(specs, masks_root, out)}
    expected = {"U": 120, "U2": 120, "I": 8, "S": 56, "X": 112, "WithEmpty": 64}
    # B grown by 1 mm at 1 mm spacing adds B's face neighbours (6-connected), computed directly below
    a, b = cube(2, 6).astype(bool), cube(4, 8).astype(bool)
    grown = b.copy()
    for ax in range(3):
        for s in (1, -1):
            grown |= np.roll(b, s, axis=ax)
    expected["S_margin"] = int((a & ~grown).sum())
    assert expected["S_margin"] == 64 - 8 - 12  # A minus A&B minus the 3 x 4 A voxels touching a face of B
    for name, voxels in expected.items():
        rec = records[name]
        assert rec["voxels"] == voxels, name
        assert rec["volume_cc"] == pytest.approx(voxels / 1000.0)
        assert not rec["skipped"] and rec["file"] == f"{name}.nii.gz"
        written = sitk.ReadImage(str(out / rec["file"]))
        assert written.GetPixelID() == sitk.sitkUInt8 and written.GetSize() == (10, 10, 10)
        assert int(sitk.GetArrayViewFromImage(written).sum()) == voxels
    assert records["WithEmpty"]["notes"] == ["input manual/Empty is empty"]
    assert records["I"]["inputs"] == ["manual/A", "totalseg/B"]


def test_missing_input_is_skipped_with_a_reason(masks_root, tmp_path):
    specs = [
        CustomSpec("Missing", "subtract", ("manual/A",), ("totalseg/spinal_cord",)),
        CustomSpec("Fine", "union", ("manual/A",)),
    ]
    records = build_all(specs, masks_root, tmp_path / "out")
    assert records[0]["skipped"] and records[0]["missing"] == ["totalseg/spinal_cord"]
    assert "totalseg/spinal_cord" in records[0]["reason"] and records[0]["file"] is None
    assert not (tmp_path / "out" / "Missing.nii.gz").exists()
    assert records[1]["voxels"] == 64


def test_inputs_on_different_grids_raise():
    masks = {"manual/A": image(cube(2, 6)), "manual/B": image(cube(2, 6), spacing=(1.0, 1.0, 2.0))}
    with pytest.raises(ValueError, match="not on the grid.*spacing"):
        build_custom_structure(CustomSpec("X", "union", ("manual/A", "manual/B")), masks.__getitem__)


@pytest.mark.parametrize("direction", [HFS, FFS], ids=["HFS", "FFS"])
def test_asymmetric_margin_grows_only_in_the_requested_patient_directions(direction):
    spacing = (2.0, 2.0, 3.0)
    arr = np.zeros((9, 9, 9), np.uint8)
    arr[4, 4, 4] = 1
    seed = image(arr, spacing, direction, origin=(10.0, -5.0, 20.0))
    spec = CustomSpec("P", "union", ("manual/P",), margin_a=Margin(left=4.0, superior=6.0))
    out = build_custom_structure(spec, {"manual/P": seed}.__getitem__)
    d = points_mm(out) - points_mm(seed)[0]
    assert np.all(d[:, 0] >= 0) and d[:, 0].max() == pytest.approx(4.0)  # +x = patient left only
    assert np.all(d[:, 1] == 0)  # no anterior / posterior growth
    assert np.all(d[:, 2] >= 0) and d[:, 2].max() == pytest.approx(6.0)  # +z = superior only
    # octant ellipse in x-z: (dx/4)^2 + (dz/6)^2 <= 1 on the 2 x 3 mm lattice -> 6 voxels
    assert len(d) == 6

    # the brief's example on a box: box extents grow by the margins, rounded down to whole voxels
    box = np.zeros((12, 16, 16), np.uint8)
    box[4:7, 6:10, 6:10] = 1
    src = image(box, spacing, direction)
    margin = Margin(left=2, right=2, anterior=5, posterior=5, superior=10, inferior=0)
    grown = build_custom_structure(
        CustomSpec("G", "union", ("manual/G",), margin_a=margin), {"manual/G": src}.__getitem__
    )
    p0, p1 = points_mm(src), points_mm(grown)
    lo0, hi0, lo1, hi1 = p0.min(0), p0.max(0), p1.min(0), p1.max(0)
    assert tuple(hi1 - hi0) == pytest.approx((2.0, 4.0, 9.0))  # left, posterior, superior
    assert tuple(lo0 - lo1) == pytest.approx((2.0, 4.0, 0.0))  # right, anterior, inferior (0)

    # contraction on one side only: 3 mm from the inferior side removes the most inferior slice
    shrunk = build_custom_structure(
        CustomSpec("C", "union", ("manual/G",), margin_a=Margin(inferior=-3.0)), {"manual/G": src}.__getitem__
    )
    p2 = points_mm(shrunk)
    assert p2[:, 2].min() == pytest.approx(lo0[2] + 3.0) and p2[:, 2].max() == pytest.approx(hi0[2])
    assert len(p2) == len(p0) * 2 // 3


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{name: X, op: minus, a: [manual/A], b: [manual/B]}", r"entry 1 \('X'\): field 'op'.*minus"),
        ("{name: X, op: subtract, a: [manual/A]}", r"entry 1 \('X'\): field 'b'"),
        ("{name: X, op: union, a: [PTV]}", r"entry 1 \('X'\): field 'a'.*<source>/<name>"),
        ("{name: X, op: union, a: [manual/A], margin_a_mm: {up: 3}}", r"field 'margin_a_mm'.*unknown directions"),
        ("{name: X, op: union, a: [manual/A], margin_a_mm: {left: 3, right: -1}}", r"field 'margin_a_mm'.*all >= 0"),
        ("{name: X, op: union, a: [manual/A], margin_b_mm: five}", r"field 'margin_b_mm'"),
        ("{name: X, op: union, a: [manual/A], margin_mm: 3}", r"entry 1 \('X'\): unknown fields \['margin_mm'\]"),
        ("{name: a/b, op: union, a: [manual/A]}", r"entry 1: field 'name'"),
    ],
)
def test_bad_entries_give_clear_errors(tmp_path, entry, message):
    path = tmp_path / "bad.yaml"
    path.write_text(f"structures:\n  - {entry}\n")
    with pytest.raises(CustomStructureError, match=message) as err:
        load_custom_structures(path)
    assert str(path) in str(err.value)


def test_yaml_margins_and_duplicates(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        """structures:
  - name: PTV_aniso
    op: union
    a: [manual/PTV]
    margin_a_mm: {left: 2, right: 2, anterior: 5, posterior: 5, superior: 10, inferior: 0}
  - {name: PTV_minus_cord, op: subtract, a: manual/PTV, b: [totalseg/spinal_cord], margin_b_mm: 5}
"""
    )
    aniso, minus = load_custom_structures(path)
    assert aniso.margin_a == Margin(2, 2, 5, 5, 10, 0) and aniso.b == ()
    assert minus.a == ("manual/PTV",) and minus.margin_b == Margin.isotropic(5) and minus.margin_b.is_isotropic
    path.write_text("structures:\n  - {name: X, op: union, a: [m/A]}\n  - {name: X, op: union, a: [m/B]}\n")
    with pytest.raises(CustomStructureError, match=r"entry 2 \('X'\): field 'name': duplicate"):
        load_custom_structures(path)
    path.write_text("- just a list\n")
    with pytest.raises(CustomStructureError, match="'structures'"):
        load_custom_structures(path)


def test_a_later_structure_uses_an_earlier_one_of_this_build(masks_root, tmp_path):
    """Regression: custom/<name> was looked for in masks/custom (the previous build, or nothing)
    while this build writes into another (temporary) folder."""
    specs = [
        CustomSpec("Fine", "union", ("manual/A",)),
        CustomSpec("FineMinusB", "subtract", ("custom/Fine",), ("totalseg/B",)),
    ]
    out = tmp_path / ".custom.tmp"  # not masks_root / "custom", as in the asset
    records = build_all(specs, masks_root, out)
    assert not records[1]["skipped"], records[1]["reason"]
    assert records[1]["voxels"] == 56  # A minus A&B, as the subtract above
