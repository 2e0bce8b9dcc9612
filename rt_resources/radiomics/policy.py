"""Which parameter set each ROI's radiomics is extracted with (``radiomics.policy``).

A course has, besides its ~8 manual ROIs, about 100 auto-segmented organs (TotalSegmentator's
``total`` task, source ``totalseg``). With the shipped CT.yaml (Original, LoG at 4 sigmas, wavelet:
1,223 features) one ROI costs ~9 CPU-seconds before its size counts (15.5 s at 150 cc, 89 s at
1,500 cc), so the full set on every organ is ~25 core-minutes per course, mostly spent on ribs,
vertebrae, muscles and vessels that outcome studies do not model. The policy gives

* the **full** set (``radiomics.params``, CT.yaml) to every ROI of a source in ``full_sources``
  (``manual``: the planner's targets and organs at risk; ``custom``: structures the user defined on
  purpose) and to every ROI whose name is in ``full_rois`` (:data:`DEFAULT_FULL_ROIS`, whatever its
  source: TotalSegmentator, an nnU-Net model);
* the **basic** set (``radiomics.basic_params``, CT_basic.yaml: the original image, first-order and
  shape features, with CT.yaml's resampling and bin width, so each value equals the same column of
  the full set) to the other ROIs;
* the **light** set (CT_light.yaml: Original at 3 mm) to very large ROIs (BODY), as before, in
  every policy: the full set at 1 mm on ~20 litres costs minutes and gigabytes, and shape at 1 mm
  on such a surface is quadratic in its vertices;
* the **mr** set (``radiomics.mr_params``, MR.yaml) to ROIs on MR images, in every policy (the CT
  sets bin in HU); the **pet** set (PET.yaml) to ROIs on PET SUV images.

``policy: full`` gives the full set to every ROI (the behaviour before the policy existed);
``policy: basic`` gives the basic set to every CT ROI (a quick first pass over a cohort).

Why these organs (:data:`DEFAULT_FULL_ROIS`): they are the organs at risk whose dose-volume
effects the QUANTEC reviews model (Int J Radiat Oncol Biol Phys 2010;76(3 Suppl)): heart
(Gagliardi et al., S77), lung (Marks et al., S70; TotalSegmentator v2 splits it into five lobes,
all listed), esophagus (Werner-Wasik et al., S86), spinal cord (Kirkpatrick et al., S42), liver
(Pan et al., S94), kidney (Dawson et al., S108), stomach, duodenum and small bowel (Kavanagh et
al., S101), bladder (Viswanathan et al., S116), brain (Lawrence et al., S20); plus the colon
(bowel toxicity of pelvic and abdominal irradiation), the prostate (target and outcome organ of
prostate radiotherapy) and the spleen (radiation-induced lymphopenia). The rectum (Michalski et al.,
S123) is not a class of TotalSegmentator v2's ``total`` task; it is a manual ROI of nearly every
pelvic plan, which gets the full set by its source. The names are the ``total`` class names of
``totalsegmentator.map_to_binary.class_map["total"]`` (2.x), matched case-insensitively; entries may
be shell patterns (``lung_*``). Add your study's organs to ``radiomics.full_rois``.

This module imports nothing heavy: the settings (``rt_resources.settings``) take their defaults
from it.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

__all__ = [
    "DEFAULT_FULL_ROIS",
    "DEFAULT_FULL_SOURCES",
    "ParamChoice",
    "ParamSet",
    "RoiPolicy",
    "choose_param_set",
    "matches_full_rois",
]


class RoiPolicy(StrEnum):
    """Which ROIs get the full parameter set (``radiomics.policy``)."""

    DEFAULT = "default"
    """The full set for ``full_sources`` (manual, custom) and the ROIs named in ``full_rois``, the
    basic set for the other ROIs (auto-segmented organs outside the list)."""
    FULL = "full"
    """The full set for every ROI."""
    BASIC = "basic"
    """The basic set for every CT ROI (a quick first pass)."""


class ParamSet(StrEnum):
    """The parameter set one ROI was extracted with (recorded per ROI in the asset's metadata)."""

    FULL = "full"
    """``radiomics.params`` (CT.yaml: Original, LoG, wavelet; all seven classes at 1 mm)."""
    BASIC = "basic"
    """``radiomics.basic_params`` (CT_basic.yaml: Original, first-order and shape at 1 mm; its values
    equal the same columns of the full set)."""
    LIGHT = "light"
    """CT_light.yaml (Original at 3 mm, all seven classes): very large ROIs such as BODY."""
    MR = "mr"
    """``radiomics.mr_params`` (MR.yaml) or another parameter file the task names: ROIs on MR images."""
    PET = "pet"
    """PET.yaml: ROIs on PET SUV images (fixed bin width in SUV units)."""


#: mask sources whose every ROI gets the full set under the default policy (masks/<source>/)
DEFAULT_FULL_SOURCES: tuple[str, ...] = ("manual", "custom")

#: auto-segmented organs that get the full set under the default policy (TotalSegmentator v2 ``total``
#: class names; why these: module docstring)
DEFAULT_FULL_ROIS: tuple[str, ...] = (
    "heart",
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
    "esophagus",
    "spinal_cord",
    "liver",
    "kidney_left",
    "kidney_right",
    "stomach",
    "duodenum",
    "small_bowel",
    "colon",
    "urinary_bladder",
    "prostate",
    "brain",
    "spleen",
)


@dataclass(frozen=True)
class ParamChoice:
    """The parameter set of one ROI, its file and why."""

    param_set: ParamSet
    params: Path
    reason: str


def matches_full_rois(roi_name: str, full_rois: Iterable[str]) -> str | None:
    """The first entry of ``full_rois`` (a name or shell pattern, case-insensitive) that
    ``roi_name`` matches, else None."""
    name = roi_name.lower()
    return next((entry for entry in full_rois if fnmatch.fnmatchcase(name, entry.lower())), None)


def choose_param_set(
    roi_name: str,
    source: str,
    *,
    policy: str,
    full_sources: Iterable[str],
    full_rois: Iterable[str],
    very_large: str | None = None,
) -> tuple[ParamSet, str]:
    """The parameter set of a CT ROI and the reason, in this order: ``very_large`` (the reason
    the ROI is very large, when it is) -> light; ``policy`` full or basic -> that set; policy
    default -> full for a source in ``full_sources`` or a name in ``full_rois``, else basic.
    ROIs on MR images are decided before this (their own parameter file)."""
    if very_large is not None:
        return ParamSet.LIGHT, very_large
    chosen = RoiPolicy(policy)
    if chosen is RoiPolicy.FULL:
        return ParamSet.FULL, "policy full"
    if chosen is RoiPolicy.BASIC:
        return ParamSet.BASIC, "policy basic"
    if source in tuple(full_sources):
        return ParamSet.FULL, f"source {source!r} is in full_sources"
    entry = matches_full_rois(roi_name, full_rois)
    if entry is not None:
        return ParamSet.FULL, f"{roi_name!r} matches full_rois entry {entry!r}"
    return ParamSet.BASIC, f"source {source!r} is not in full_sources and {roi_name!r} is not in full_rois"
