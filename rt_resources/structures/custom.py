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
(``subtract`` is A and not B). How margins are applied (exact Euclidean distance for a number,
an octant-ellipsoid element per direction) is in :mod:`rt_resources.structures.margins`.

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

from rt_resources.course_paths import CUSTOM
from rt_resources.structures.margins import DIRECTIONS, Margin, apply_margin

OPS = ("union", "intersection", "subtract", "xor")
_FIELDS = {"name", "op", "a", "b", "margin_a_mm", "margin_b_mm"}
_NAME = re.compile(r"^[A-Za-z0-9_.+\-]+$")
_GRID_TOL = 1e-4


class CustomStructureError(ValueError):
    """A custom-structure definition is invalid; the message names the entry and the field."""


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
    error; inputs not on one grid raise ``ValueError``. Specs are built in order, and
    ``custom/<name>`` refers to what this call built into ``out_folder`` (the asset writes into a
    temporary folder swapped in at the end), so a later spec may use an earlier one.
    """
    out_folder = Path(out_folder)
    out_folder.mkdir(parents=True, exist_ok=True)
    cache: dict[str, sitk.Image] = {}

    def path_of(ref: str) -> Path:
        source, name = ref.split("/", 1)
        return out_folder / f"{name}.nii.gz" if source == CUSTOM else mask_path(masks_root, ref)

    def get_mask(ref: str) -> sitk.Image:
        if ref not in cache:
            cache[ref] = sitk.ReadImage(str(path_of(ref)))
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
            "missing": [ref for ref in spec.inputs if not path_of(ref).is_file()],
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
