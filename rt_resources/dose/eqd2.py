"""EQD2 and BED per treatment phase, voxel by voxel, and the alpha/beta table they use.

Linear-quadratic (LQ) model (Fowler JF, "The linear-quadratic formula and progress in
fractionated radiotherapy", Br J Radiol 1989;62:679-694; Joiner MC & van der Kogel AJ, Basic
Clinical Radiobiology, chapters on the LQ model and fractionation). A phase delivering a
physical dose ``D`` (Gy, per voxel) in ``n`` equal fractions of ``d = D / n``:

    BED  = D (1 + d / (a/b))
    EQD2 = BED / (1 + 2 / (a/b)) = D (d + a/b) / (2 + a/b)

(EQD2 is Withers' isoeffect formula: Withers HR, Thames HD, Peters LJ, Radiother Oncol
1983;1:187-191.) Assumptions: equal fractions within a phase, complete repair between fractions,
no repopulation (overall time) term.

A course of several phases (a primary plan 25 x 2 Gy and a boost 8 x 2.5 Gy, each one RTPLAN
fraction group with its own NumberOfFractionsPlanned and its own dose grid) is converted **phase
by phase** and the phases' EQD2 (or BED) are summed per voxel. Converting the summed physical
dose with one fraction count would give every voxel a wrong dose per fraction: that is the error
this module exists to avoid. The phases must already be on one grid (``total.common_grid`` and
``total.resample_onto`` do that); this module refuses phases that are not.

Alpha/beta ratios come from :class:`AlphaBetaTable`: the shipped ``data/alpha_beta.yaml`` (values
and sources in its header), extended by a site's own file of the same format: the site's defaults
and entries replace the shipped ones of the same name, its other entries are added.

No Dagster here: functions take SimpleITK images and numbers, return images, arrays and
dataclasses.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rt_resources.dose.total import same_grid

if TYPE_CHECKING:
    import SimpleITK as sitk

SHIPPED_TABLE = Path(__file__).resolve().parent / "data" / "alpha_beta.yaml"
TARGET_PREFIXES = ("GTV", "CTV", "ITV", "IGTV", "PTV")  #: TG-263 target types; a name starting so is a target
#: the TG-263 decorations of a structure derived from an organ (planning risk volume with its margin,
#: optimization and evaluation copies): it takes the organ's alpha/beta
_DERIVED = re.compile(r"^z(?=[A-Z])|_PRV\d*$|_opt$|_eval$")

_DEFAULT_LABELS = {
    "tumour": "tumour",
    "normal_tissue_late": "normal tissue (late)",
    "normal_tissue_early": "normal tissue (early)",
}
_REQUIRED_DEFAULTS = ("tumour", "normal_tissue_late")
_SECTIONS = ("defaults", "organs", "targets")
_ENTRY_KEYS = {"value", "citation"}


class EQD2Error(ValueError):
    """EQD2/BED refused, or an alpha/beta table that cannot be used; names what and why."""


@dataclass(frozen=True)
class Phase:
    """One treatment phase: one RTPLAN fraction group and its physical dose."""

    plan_uid: str  #: the RTPLAN's SOP Instance UID
    dose: sitk.Image  #: physical dose of this phase in Gy; every phase of a course on the same grid
    fractions: int | None  #: NumberOfFractionsPlanned; None when the plan states none


@dataclass(frozen=True)
class AlphaBeta:
    value_gy: float
    source: str  #: which table entry or default gave the value, e.g. "alpha_beta.yaml: SpinalCord"


# --------------------------------------------------------------------------------------------
# the engine


def withheld_reason(phases: list[Phase]) -> str:
    """Why EQD2/BED cannot be computed for ``phases``, or "" when they can."""
    if not phases:
        return "no treatment phase"
    for phase in phases:
        if phase.fractions is None:
            return f"plan {phase.plan_uid} states no NumberOfFractionsPlanned"
        if isinstance(phase.fractions, bool) or not isinstance(phase.fractions, int) or phase.fractions < 1:
            return (
                f"plan {phase.plan_uid} states NumberOfFractionsPlanned {phase.fractions!r}: "
                "a phase needs at least 1 fraction"
            )
    return ""


def _check_alpha_beta(alpha_beta_gy: float) -> float:
    if isinstance(alpha_beta_gy, bool) or not isinstance(alpha_beta_gy, int | float | np.integer | np.floating):
        raise EQD2Error(f"alpha/beta must be a number of Gy, got {alpha_beta_gy!r}")
    value = float(alpha_beta_gy)
    if not math.isfinite(value) or value <= 0:
        raise EQD2Error(f"alpha/beta must be a positive finite number of Gy, got {alpha_beta_gy!r}")
    return value


def eqd2_array(phases: list[Phase], alpha_beta_gy: float) -> np.ndarray:
    """Course EQD2 in Gy: the sum over phases of ``D (D/n + a/b) / (2 + a/b)``, voxel by voxel.

    float64, indexed z, y, x like ``sitk.GetArrayFromImage``. Refuses (:class:`EQD2Error`) a
    non-positive alpha/beta, phases that :func:`withheld_reason` withholds, a phase on another
    grid than the first phase's, and negative or non-finite doses.
    """
    ab = _check_alpha_beta(alpha_beta_gy)
    reason = withheld_reason(phases)
    if reason:
        raise EQD2Error(f"EQD2 withheld: {reason}")
    import SimpleITK as sitk

    reference = phases[0].dose
    total = None
    for phase in phases:
        if not same_grid(phase.dose, reference):
            raise EQD2Error(
                f"plan {phase.plan_uid}: its dose grid (size {phase.dose.GetSize()}, origin {phase.dose.GetOrigin()}, "
                f"spacing {phase.dose.GetSpacing()}) differs from plan {phases[0].plan_uid}'s; resample every "
                "phase onto one grid first (rt_resources.dose.total.common_grid, resample_onto)"
            )
        dose_gy = sitk.GetArrayFromImage(phase.dose).astype(np.float64, copy=False)
        if not np.all(np.isfinite(dose_gy)):
            raise EQD2Error(f"plan {phase.plan_uid}: its dose has non-finite voxels (NaN or infinite)")
        if dose_gy.size and dose_gy.min() < 0:
            raise EQD2Error(f"plan {phase.plan_uid}: its dose has negative voxels (min {dose_gy.min():.6g} Gy)")
        per_fraction_gy = dose_gy / phase.fractions
        phase_eqd2 = dose_gy * (per_fraction_gy + ab) / (2.0 + ab)
        total = phase_eqd2 if total is None else total + phase_eqd2
    return total


def _image(array: np.ndarray, reference: sitk.Image) -> sitk.Image:
    import SimpleITK as sitk

    out = sitk.GetImageFromArray(array)
    out.CopyInformation(reference)
    return out


def eqd2(phases: list[Phase], alpha_beta_gy: float) -> sitk.Image:
    """Course EQD2 in Gy on the phases' grid (float64); see :func:`eqd2_array`."""
    return _image(eqd2_array(phases, alpha_beta_gy), phases[0].dose)


def bed(phases: list[Phase], alpha_beta_gy: float) -> sitk.Image:
    """Course BED in Gy on the phases' grid (float64): the sum over phases of ``D (1 + D/n / (a/b))``.

    Computed as EQD2 x (1 + 2/(a/b)), which per phase is the same quantity; refusals as
    :func:`eqd2_array`.
    """
    ab = _check_alpha_beta(alpha_beta_gy)
    return _image(eqd2_array(phases, ab) * (1.0 + 2.0 / ab), phases[0].dose)


# --------------------------------------------------------------------------------------------
# the alpha/beta table


def is_target(name: str | None) -> bool:
    """A ROI name of a target volume: starts with GTV, CTV, ITV, IGTV or PTV, any case (TG-263)."""
    return bool(name) and name.strip().upper().startswith(TARGET_PREFIXES)


def base_structure(roi_std: str) -> str:
    """The organ a TG-263 derived structure is made from (``SpinalCord_PRV05`` -> ``SpinalCord``,
    ``zParotid_L_opt`` -> ``Parotid_L``); the name itself otherwise."""
    previous = None
    while previous != roi_std:
        previous, roi_std = roi_std, _DERIVED.sub("", roi_std)
    return roi_std


def _node_line(root, path: tuple[str, ...]) -> int | None:
    """1-based line of the key that ends ``path`` in a composed YAML node tree, or None."""
    import yaml

    node, line = root, None
    for key in path:
        if not isinstance(node, yaml.MappingNode):
            return None
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == key:
                node, line = value_node, key_node.start_mark.line + 1
                break
        else:
            return None
    return line


@dataclass(frozen=True)
class _Entry:
    value_gy: float
    source: str
    citation: str


class AlphaBetaTable:
    """Alpha/beta ratios by TG-263 structure name, with defaults for targets and other tissue.

    :meth:`load` reads the shipped ``data/alpha_beta.yaml`` and, when given, a site's own file
    that extends it (its entries and defaults replace the shipped ones of the same name).
    :meth:`lookup` order: an entry of ``targets`` or ``organs`` named ``roi_std`` (exactly, then
    ignoring case); a target (``roi_std``, or ``roi_name`` when there is no ``roi_std``, starts
    with GTV/CTV/ITV/PTV) gets the tumour default; every other ROI the late normal tissue default.
    ``digest`` is the sha256 of every value and source ``lookup`` can return, so comments and
    citations do not change it but any value does.
    """

    def __init__(self, defaults: dict[str, _Entry], entries: dict[str, _Entry], files: tuple[Path, ...]):
        self.defaults = dict(defaults)
        self.entries = dict(entries)  #: TG-263 name -> entry, organs and targets together
        self.files = files
        self._folded = {name.casefold(): name for name in self.entries}
        canonical = {
            "defaults": {k: [v.value_gy, v.source] for k, v in sorted(self.defaults.items())},
            "entries": {k: [v.value_gy, v.source] for k, v in sorted(self.entries.items())},
        }
        self.digest = hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()

    @classmethod
    def load(cls, path: Path | None = None) -> AlphaBetaTable:
        """The shipped table, extended by the site file at ``path`` when given (see class docstring)."""
        defaults: dict[str, _Entry] = {}
        entries: dict[str, _Entry] = {}
        files = [SHIPPED_TABLE]
        _read_into(SHIPPED_TABLE, SHIPPED_TABLE.name, defaults, entries, shipped=True)
        if path is not None:
            path = Path(path)
            files.append(path)
            _read_into(path, f"site file {path.name}", defaults, entries, shipped=False)
        for key in _REQUIRED_DEFAULTS:
            if key not in defaults:
                raise EQD2Error(f"{SHIPPED_TABLE}: defaults.{key} is missing; the table needs a value for it")
        return cls(defaults, entries, tuple(files))

    def lookup(self, roi_std: str | None, roi_name: str = "") -> AlphaBeta:
        """Alpha/beta of a ROI by its TG-263 name ``roi_std`` (see the class docstring for the order)."""
        if roi_std:
            name = roi_std if roi_std in self.entries else self._folded.get(roi_std.strip().casefold())
            if name is not None:
                entry = self.entries[name]
                return AlphaBeta(entry.value_gy, entry.source)
            organ = base_structure(roi_std)
            if organ != roi_std:  # a PRV, optimization or evaluation copy: its organ's alpha/beta
                found = self.lookup(organ)
                return AlphaBeta(found.value_gy, f"{found.source} (the organ of {roi_std})")
            if is_target(roi_std):
                return AlphaBeta(self.defaults["tumour"].value_gy, self.defaults["tumour"].source)
        elif is_target(roi_name):
            tumour = self.defaults["tumour"]
            return AlphaBeta(tumour.value_gy, f"{tumour.source} (ROI {roi_name!r} has no TG-263 name; a target name)")
        late = self.defaults["normal_tissue_late"]
        return AlphaBeta(late.value_gy, late.source)


def check_site_names(table: AlphaBetaTable, path: Path, name_map) -> None:
    """Refuse an entry of the site file ``path`` whose name is not a standard name of ``name_map``
    (:class:`rt_resources.naming.tg263.NameMap`): it would never match a ROI. A target must be
    written as the mapping writes it (``PTV_7000``, not ``PTV70``)."""
    import difflib

    label = f"site file {Path(path).name}: "
    for name, entry in table.entries.items():
        if not entry.source.startswith(label):
            continue
        std = name_map.standardize(name).roi_std
        if std == name:  # the mapping's own form: a TG-263 name, a target, a PRV or opt/eval copy
            continue
        if std is not None and std != name:
            hint = f"write it as {std}"
        else:
            close = difflib.get_close_matches(name, sorted(name_map.standard_names), n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "use a TG-263 name (rt_resources/naming/data)"
        raise EQD2Error(f"{path}: {name!r} is not a standard structure name, so it would match no ROI; {hint}")


def _read_into(path: Path, label: str, defaults: dict, entries: dict, shipped: bool) -> None:
    """Check the table file at ``path`` and merge its defaults and entries into the dicts."""
    import yaml

    try:
        text = path.read_text()
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except (OSError, yaml.YAMLError) as exc:
        raise EQD2Error(f"{path}: cannot read the alpha/beta table: {exc}") from exc
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise EQD2Error(f"{path}: an alpha/beta table is a mapping with sections {', '.join(_SECTIONS)}")

    def where(*keys: str) -> str:
        line = _node_line(root, keys)
        return f"{path}: {'.'.join(keys)}" + (f" (line {line})" if line else "")

    unknown = sorted(str(k) for k in data if k not in _SECTIONS)
    if unknown:
        raise EQD2Error(f"{where(unknown[0])}: unknown section; the sections are {', '.join(_SECTIONS)}")
    _refuse_duplicates(path, root)
    for section in _SECTIONS:
        body = data.get(section) or {}
        if not isinstance(body, dict):
            raise EQD2Error(f"{where(section)}: must be a mapping of names to alpha/beta entries")
        for name, raw in body.items():
            name = str(name)
            if section == "defaults" and name not in _DEFAULT_LABELS:
                raise EQD2Error(
                    f"{where(section, name)}: unknown default; the defaults are {', '.join(_DEFAULT_LABELS)}"
                )
            value, citation = _entry_value(raw, where(section, name))
            if section == "defaults":
                source = f"default: {_DEFAULT_LABELS[name]}" + ("" if shipped else f", from {label}")
                defaults[name] = _Entry(value, source, citation)
            else:
                # a site entry replaces a shipped entry of the same name, whatever its case
                for existing in [k for k in entries if k.casefold() == name.casefold()]:
                    del entries[existing]
                entries[name] = _Entry(value, f"{label}: {name}", citation)


def _refuse_duplicates(path: Path, root) -> None:
    """Refuse a name given twice in one file (YAML would keep the last silently): a default twice,
    or a structure twice across organs and targets, ignoring case."""
    import yaml

    if not isinstance(root, yaml.MappingNode):
        return
    sections = {k.value: v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    groups = [("defaults",), ("organs", "targets")]
    for group in groups:
        seen: dict[str, tuple[str, int]] = {}
        for section in group:
            node = sections.get(section)
            if not isinstance(node, yaml.MappingNode):
                continue
            for key_node, _ in node.value:
                name = str(key_node.value)
                here = (f"{section}.{name}", key_node.start_mark.line + 1)
                first = seen.setdefault(name.casefold(), here)
                if first is not here:
                    raise EQD2Error(
                        f"{path}: {here[0]} (line {here[1]}) repeats {first[0]} (line {first[1]}); "
                        "keep one entry per name"
                    )


def _entry_value(raw, where: str) -> tuple[float, str]:
    """(value in Gy, citation) of one entry: a bare number or {value, citation}."""
    citation = ""
    if isinstance(raw, dict):
        extra = sorted(str(k) for k in raw if k not in _ENTRY_KEYS)
        if extra:
            raise EQD2Error(f"{where}: unknown key {extra[0]!r}; an entry has value (Gy) and citation")
        if "value" not in raw:
            raise EQD2Error(f"{where}: no value; give the alpha/beta in Gy as value: <number>")
        citation = str(raw.get("citation") or "")
        raw = raw["value"]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise EQD2Error(f"{where}: alpha/beta must be a number of Gy, got {raw!r}; correct or remove the entry")
    value = float(raw)
    if not math.isfinite(value) or value <= 0:
        raise EQD2Error(
            f"{where}: alpha/beta must be a positive number of Gy, got {raw!r}; correct or remove the entry"
        )
    return value, citation
