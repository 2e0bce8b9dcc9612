"""Custom structures: boolean combinations of masks with margins, defined in a YAML file.

YAML format::

    structures:
      - name: PTV_minus_cord          # output file <name>.nii.gz; letters, digits, _ - . + only
        op: subtract                  # union | intersection | subtract | xor
        a: [manual/PTV]               # "<source>/<name>" references; several are united first
        b: [totalseg/spinal_cord]     # required except for union (where b, if given, is united too)
        margin_b_mm: 5                # isotropic expansion (mm) of b before the op; negative contracts
      - name: PTV_aniso
        op: union
        a: [manual/PTV]
        margin_a_mm: {left: 2, right: 2, anterior: 5, posterior: 5, superior: 10, inferior: 0}

The result is ``A op B`` with ``A = union(a) (+) margin_a`` and ``B = union(b) (+) margin_b``
(``subtract`` is A and not B).

Margins (mm)
------------
* **Isotropic** (a number): exact Euclidean distance on the voxel grid,
  ``scipy.ndimage.distance_transform_edt`` with the voxel spacing as sampling. Expansion by ``r``
  adds every voxel whose centre is within ``r`` of a mask voxel centre; contraction by ``r`` keeps
  the voxels whose centre is farther than ``r`` from every background voxel centre. Outside the
  image counts as background: expansion is cut at the image edge, contraction also shrinks from it.
* **Per direction** (a mapping of ``left, right, anterior, posterior, superior, inferior``, missing
  ones 0): Minkowski sum with a structuring element made of eight ellipsoid octants. An integer
  voxel offset is in the element when its displacement ``d`` in patient coordinates (DICOM LPS:
  ``+x`` left, ``+y`` posterior, ``+z`` superior; ``d = D @ (spacing * offset)``, so the direction
  matrix maps patient directions to image axes for HFS, FFS or any orientation) satisfies
  ``sum_c (d_c / r_c)^2 <= 1`` with ``r_c`` the margin on the side of ``d_c`` (a component with a
  0 margin must be 0). With six equal margins this is exactly the isotropic expansion. All six
  must be >= 0 (expansion) or all <= 0 (contraction: erosion by the same element, i.e. the
  structure shrinks by ``|r|`` from each side); mixed signs are rejected.

All masks of one structure must share the grid (size, spacing, origin, direction); a mismatch
raises ``ValueError``. Masks are non-zero = inside; outputs are uint8 0/1 on the same grid.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

OPS = ("union", "intersection", "subtract", "xor")
DIRECTIONS = ("left", "right", "anterior", "posterior", "superior", "inferior")
_FIELDS = {"name", "op", "a", "b", "margin_a_mm", "margin_b_mm"}
_NAME = re.compile(r"^[A-Za-z0-9_.+\-]+$")
_EPS = 1e-6
_GRID_TOL = 1e-4


class CustomStructureError(ValueError):
    """A custom-structure definition is invalid; the message names the entry and the field."""


@dataclass(frozen=True)
class Margin:
    """Margin in mm per patient direction; positive expands, negative contracts."""

    left: float = 0.0
    right: float = 0.0
    anterior: float = 0.0
    posterior: float = 0.0
    superior: float = 0.0
    inferior: float = 0.0

    @classmethod
    def isotropic(cls, mm: float) -> Margin:
        return cls(*([float(mm)] * 6))

    def values(self) -> tuple[float, ...]:
        return tuple(getattr(self, d) for d in DIRECTIONS)

    @property
    def is_isotropic(self) -> bool:
        return len(set(self.values())) == 1

    @property
    def is_zero(self) -> bool:
        return not any(self.values())


@dataclass(frozen=True)
class CustomSpec:
    """One custom structure: ``union(a) (+) margin_a`` ``op`` ``union(b) (+) margin_b``.

    ``a`` and ``b`` are ``"<source>/<name>"`` references (``b`` empty for a plain union of ``a``).
    """

    name: str
    op: str
    a: tuple[str, ...]
    b: tuple[str, ...] = ()
    margin_a: Margin = field(default_factory=Margin)
    margin_b: Margin = field(default_factory=Margin)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.a + self.b))


# ---------------------------------------------------------------------------------------------
# YAML


def _fail(where: str, field_: str, problem: str):
    raise CustomStructureError(f"{where}: field {field_!r}: {problem}")


def _number(value, where: str, field_: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        _fail(where, field_, f"expected a finite number of mm, got {value!r}")
    return float(value)


def _margin(value, where: str, field_: str) -> Margin:
    if value is None:
        return Margin()
    if isinstance(value, dict):
        unknown = set(value) - set(DIRECTIONS)
        if unknown:
            _fail(where, field_, f"unknown directions {sorted(map(str, unknown))}; use {', '.join(DIRECTIONS)}")
        margin = Margin(**{d: _number(v, where, f"{field_}.{d}") for d, v in value.items()})
        if min(margin.values()) < 0 < max(margin.values()):
            _fail(where, field_, "per-direction margins must be all >= 0 (expand) or all <= 0 (contract)")
        return margin
    return Margin.isotropic(_number(value, where, field_))


def _refs(value, where: str, field_: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        _fail(where, field_, f"expected a non-empty list of '<source>/<name>' references, got {value!r}")
    for ref in value:
        parts = ref.split("/") if isinstance(ref, str) else []
        if len(parts) != 2 or not all(parts) or not all(_NAME.match(p) for p in parts):
            _fail(where, field_, f"expected '<source>/<name>' (e.g. manual/PTV), got {ref!r}")
    return tuple(value)


def parse_custom_structures(data, origin: str = "custom structures") -> list[CustomSpec]:
    """Validated specs from the parsed YAML document ``data``; ``origin`` prefixes error messages."""
    if not isinstance(data, dict) or not isinstance(data.get("structures"), list):
        raise CustomStructureError(f"{origin}: expected a mapping with a list under 'structures'")
    specs, seen = [], set()
    for n, entry in enumerate(data["structures"], start=1):
        where = f"{origin}: entry {n}"
        if not isinstance(entry, dict):
            raise CustomStructureError(f"{where}: expected a mapping, got {entry!r}")
        name = entry.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            _fail(where, "name", f"expected a file-safe name (letters, digits, _ - . +), got {name!r}")
        where = f"{origin}: entry {n} ({name!r})"
        if name in seen:
            _fail(where, "name", "duplicate name")
        seen.add(name)
        unknown = set(entry) - _FIELDS
        if unknown:
            raise CustomStructureError(
                f"{where}: unknown fields {sorted(map(str, unknown))}; allowed: {sorted(_FIELDS)}"
            )
        op = entry.get("op")
        if op not in OPS:
            _fail(where, "op", f"expected one of {', '.join(OPS)}, got {op!r}")
        a = _refs(entry.get("a"), where, "a")
        if "b" in entry or op != "union":
            b = _refs(entry.get("b"), where, "b")
        else:
            b = ()
        margin_b = _margin(entry.get("margin_b_mm"), where, "margin_b_mm")
        if not b and not margin_b.is_zero:
            _fail(where, "margin_b_mm", "given without 'b'")
        specs.append(CustomSpec(name, op, a, b, _margin(entry.get("margin_a_mm"), where, "margin_a_mm"), margin_b))
    return specs


def load_custom_structures(path: Path) -> list[CustomSpec]:
    """Read and validate the custom-structure YAML file at ``path``.

    Raises :class:`CustomStructureError` naming the file, the entry (number and name) and the field.
    """
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text())
    except yaml.YAMLError as exc:
        raise CustomStructureError(f"{path}: not valid YAML: {exc}") from exc
    return parse_custom_structures(data, origin=str(path))


# ---------------------------------------------------------------------------------------------
# Margins


def _bbox(mask: np.ndarray, pad: tuple[int, ...]) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``pad`` voxels per axis, clipped to the array."""
    out = []
    for ax, p in enumerate(pad):
        hit = np.nonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))[0]
        out.append(slice(max(int(hit[0]) - p, 0), min(int(hit[-1]) + p + 1, mask.shape[ax])))
    return tuple(out)


def _dilate_edt(mask: np.ndarray, r: float, sampling: tuple[float, ...]) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    pad = tuple(int(math.ceil(r / s)) + 1 for s in sampling)
    box = _bbox(mask, pad)
    dist = distance_transform_edt(~mask[box], sampling=sampling)
    out = np.zeros_like(mask)
    out[box] = dist <= r + _EPS
    return out


def _erode_edt(mask: np.ndarray, r: float, sampling: tuple[float, ...]) -> np.ndarray:
    from scipy.ndimage import distance_transform_edt

    box = _bbox(mask, (1,) * mask.ndim)
    sub = np.pad(mask[box], 1)  # outside the image is background
    dist = distance_transform_edt(sub, sampling=sampling)[(slice(1, -1),) * mask.ndim]
    out = np.zeros_like(mask)
    out[box] = dist > r + _EPS
    return out


def structuring_element(margin: Margin, spacing: tuple[float, ...], direction: np.ndarray) -> np.ndarray:
    """Boolean kernel (numpy order k, j, i; centre = no offset) of the octant-ellipsoid element.

    ``margin``: per-direction magnitudes in mm (signs ignored); ``spacing``: (i, j, k) in mm;
    ``direction``: the 3x3 image direction matrix (columns = image axes in LPS).
    """
    r = [abs(v) for v in margin.values()]
    reach = max(r)
    half = [int(math.floor(reach / s + _EPS)) for s in spacing]  # per (i, j, k) axis
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1).astype(float)  # (n, 3) in (i, j, k)
    d = (offsets * np.asarray(spacing, dtype=float)) @ np.asarray(direction, dtype=float).T  # LPS mm
    left, right, anterior, posterior, superior, inferior = r
    ok = np.ones(len(d), dtype=bool)
    norm = np.zeros(len(d))
    for c, (pos, neg) in enumerate(((left, right), (posterior, anterior), (superior, inferior))):
        comp = np.where(np.abs(d[:, c]) < _EPS, 0.0, d[:, c])
        radius = np.where(comp > 0, pos, neg)
        zero = radius <= 0
        ok &= ~(zero & (comp != 0))
        norm += np.where(zero, 0.0, comp / np.where(zero, 1.0, radius)) ** 2
    ok &= norm <= 1.0 + 1e-9
    return ok.reshape([2 * h + 1 for h in half]).transpose(2, 1, 0)  # (i, j, k) -> (k, j, i)


def _dilate_kernel(mask: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Minkowski sum of ``mask`` with the centred ``kernel`` (FFT convolution on the bounding box)."""
    from scipy.signal import fftconvolve

    half = tuple(s // 2 for s in kernel.shape)
    box = _bbox(mask, half)
    conv = fftconvolve(mask[box].astype(np.float32), kernel.astype(np.float32), mode="full")
    # "full" output index p is image index box.start - half + p; keep the part inside the image
    out = np.zeros_like(mask)
    dst, src = [], []
    for ax, b in enumerate(box):
        lo = b.start - half[ax]  # image index of conv index 0
        d0, d1 = max(lo, 0), min(lo + conv.shape[ax], mask.shape[ax])
        dst.append(slice(d0, d1))
        src.append(slice(d0 - lo, d1 - lo))
    out[tuple(dst)] = conv[tuple(src)] > 0.5
    return out


def apply_margin(mask: np.ndarray, margin: Margin, spacing: tuple[float, ...], direction=None) -> np.ndarray:
    """``mask`` (bool, numpy order k, j, i) grown (or shrunk) by ``margin`` (mm).

    ``spacing``: (i, j, k) voxel size in mm, ``direction``: 3x3 direction matrix (identity if
    ``None``); see the module docstring for the method.
    """
    mask = np.asarray(mask, dtype=bool)
    if margin.is_zero or not mask.any():
        return mask.copy()
    sampling = tuple(float(s) for s in spacing[::-1])  # numpy axis order
    values = margin.values()
    if margin.is_isotropic:
        r = values[0]
        return _dilate_edt(mask, r, sampling) if r > 0 else _erode_edt(mask, -r, sampling)
    if min(values) < 0 < max(values):
        raise ValueError(f"per-direction margins must be all >= 0 or all <= 0, got {margin}")
    direction = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    kernel = structuring_element(margin, tuple(spacing), direction)
    if max(values) > 0:
        return _dilate_kernel(mask, kernel)
    # erosion by K: x kept iff x + s inside for all s in K  <=>  not (background (+) reflected K)
    pad = tuple(s // 2 for s in kernel.shape)
    box = _bbox(mask, (1,) * mask.ndim)
    sub = np.pad(mask[box], [(p, p) for p in pad])  # outside the image is background
    grown = _dilate_kernel(~sub, kernel[::-1, ::-1, ::-1])
    out = np.zeros_like(mask)
    out[box] = ~grown[tuple(slice(p, p + (b.stop - b.start)) for p, b in zip(pad, box, strict=True))] & mask[box]
    return out


# ---------------------------------------------------------------------------------------------
# Building


def check_same_grid(images: dict[str, sitk.Image]) -> None:
    """Raise ``ValueError`` unless all ``images`` share size, spacing, origin and direction."""
    items = list(images.items())
    ref_name, ref = items[0]
    for name, img in items[1:]:
        problems = []
        if img.GetSize() != ref.GetSize():
            problems.append(f"size {img.GetSize()} != {ref.GetSize()}")
        for what, get in (("spacing", "GetSpacing"), ("origin", "GetOrigin"), ("direction", "GetDirection")):
            a, b = np.asarray(getattr(img, get)()), np.asarray(getattr(ref, get)())
            if not np.allclose(a, b, atol=_GRID_TOL):
                problems.append(f"{what} {tuple(np.round(a, 4))} != {tuple(np.round(b, 4))}")
        if problems:
            raise ValueError(f"mask {name!r} is not on the grid of {ref_name!r}: {'; '.join(problems)}")


def _union(refs: tuple[str, ...], arrays: dict[str, np.ndarray]) -> np.ndarray:
    out = np.zeros_like(next(iter(arrays.values())), dtype=bool)
    for ref in refs:
        out |= arrays[ref]
    return out


def build_custom_structure(spec: CustomSpec, get_mask: Callable[[str], sitk.Image]) -> sitk.Image:
    """The uint8 (0/1) mask of ``spec``, on the grid of its inputs.

    ``get_mask(ref)`` returns the mask of a ``"<source>/<name>"`` reference (non-zero = inside).
    Raises ``ValueError`` when the inputs are not on one grid.
    """
    images = {ref: get_mask(ref) for ref in spec.inputs}
    check_same_grid(images)
    ref_img = images[spec.inputs[0]]
    spacing, direction = ref_img.GetSpacing(), np.asarray(ref_img.GetDirection()).reshape(3, 3)
    arrays = {ref: sitk.GetArrayViewFromImage(img) != 0 for ref, img in images.items()}
    a = apply_margin(_union(spec.a, arrays), spec.margin_a, spacing, direction)
    if spec.b:
        b = apply_margin(_union(spec.b, arrays), spec.margin_b, spacing, direction)
        result = {"union": a | b, "intersection": a & b, "subtract": a & ~b, "xor": a ^ b}[spec.op]
    else:
        result = a
    out = sitk.GetImageFromArray(result.astype(np.uint8))
    out.CopyInformation(ref_img)
    return out


def mask_path(masks_root: Path, ref: str) -> Path:
    """File of the ``"<source>/<name>"`` reference: ``masks_root/<source>/<name>.nii.gz``."""
    source, name = ref.split("/", 1)
    return Path(masks_root) / source / f"{name}.nii.gz"


def build_all(specs: list[CustomSpec], masks_root: Path, out_folder: Path) -> list[dict]:
    """Build every spec from ``masks_root/<source>/<name>.nii.gz`` into ``out_folder/<name>.nii.gz``.

    Returns one record per spec: ``name``, ``op``, ``file`` (None when skipped), ``voxels``,
    ``volume_cc``, ``inputs``, ``missing`` (input references without a file), ``skipped`` and
    ``reason``, and ``notes`` (e.g. empty inputs). A spec with a missing input is skipped, not an
    error; inputs not on one grid raise ``ValueError``. Specs are built in order, so with
    ``out_folder == masks_root / "custom"`` a later spec may use ``custom/<earlier name>``.
    """
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    cache: dict[str, sitk.Image] = {}

    def get_mask(ref: str) -> sitk.Image:
        if ref not in cache:
            cache[ref] = sitk.ReadImage(str(mask_path(masks_root, ref)))
        return cache[ref]

    records = []
    for spec in specs:
        record = {
            "name": spec.name,
            "op": spec.op,
            "file": None,
            "voxels": 0,
            "volume_cc": 0.0,
            "inputs": list(spec.inputs),
            "missing": [ref for ref in spec.inputs if not mask_path(masks_root, ref).is_file()],
            "skipped": False,
            "reason": None,
            "notes": [],
        }
        if record["missing"]:
            record["skipped"] = True
            record["reason"] = f"missing input masks: {', '.join(record['missing'])}"
            records.append(record)
            continue
        mask = build_custom_structure(spec, get_mask)
        record["notes"] = [
            f"input {ref} is empty" for ref in spec.inputs if not sitk.GetArrayFromImage(get_mask(ref)).any()
        ]
        file = f"{spec.name}.nii.gz"
        sitk.WriteImage(mask, str(out_folder / file), True)
        voxels = int(sitk.GetArrayViewFromImage(mask).sum())
        record.update(file=file, voxels=voxels, volume_cc=voxels * float(np.prod(mask.GetSpacing())) / 1000.0)
        if voxels == 0:
            record["notes"].append("result is empty")
        records.append(record)
    return records
