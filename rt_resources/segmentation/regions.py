"""The anatomical crop regions: landmarks of their bounds and margins (definitions only, no
imaging code, so the CLI can list the regions without loading SimpleITK).
:mod:`rt_resources.segmentation.crop` computes the bounds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: Height of the femoral head measured down from the top of the femur, in mm (adult femoral head
#: diameter is about 45-55 mm). TotalSegmentator's ``femur_*`` masks run to the scan edge, so the
#: pelvis inferior bound uses the most inferior voxel of the femur's top ``FEMORAL_HEAD_MM`` mm.
FEMORAL_HEAD_MM = 50.0

#: Default superior and inferior margins, in mm, of every region.
DEFAULT_MARGIN_MM = 10.0


@dataclass(frozen=True)
class Landmark:
    """A patient-z level from TotalSegmentator masks.

    ``edge`` picks the most superior (``"top"``) or most inferior (``"bottom"``) voxel centre of
    each class; the most extreme class wins (max for ``top``, min for ``bottom``). ``top_mm``
    (mm, optional) first restricts each class to its voxels within ``top_mm`` of its own top
    (e.g. the femoral head as the top 50 mm of the femur).
    """

    classes: tuple[str, ...]
    edge: Literal["top", "bottom"]
    top_mm: float | None = None
    label: str = ""

    def describe(self) -> str:
        what = self.label or ", ".join(self.classes)
        return f"{what} {self.edge}"


@dataclass(frozen=True)
class RegionSpec:
    """A crop region: landmarks for its superior and inferior bounds and margins in mm (>= 0 widens)."""

    name: str
    superior: Landmark
    inferior: Landmark
    margin_sup_mm: float = DEFAULT_MARGIN_MM
    margin_inf_mm: float = DEFAULT_MARGIN_MM


LUNG_LOBES = (
    "lung_upper_lobe_left",
    "lung_lower_lobe_left",
    "lung_upper_lobe_right",
    "lung_middle_lobe_right",
    "lung_lower_lobe_right",
)

REGIONS: dict[str, RegionSpec] = {
    spec.name: spec
    for spec in (
        RegionSpec(
            "pelvis",
            superior=Landmark(("vertebrae_L1",), "top"),
            inferior=Landmark(("femur_left", "femur_right"), "bottom", top_mm=FEMORAL_HEAD_MM, label="femoral heads"),
        ),
        RegionSpec(
            "abdomen",
            superior=Landmark(("liver", "spleen"), "top"),
            inferior=Landmark(("vertebrae_L5",), "bottom"),
        ),
        RegionSpec(
            "thorax",
            superior=Landmark(
                ("clavicula_left", "clavicula_right", "lung_upper_lobe_left", "lung_upper_lobe_right"), "top"
            ),
            inferior=Landmark(LUNG_LOBES, "bottom", label="lungs"),
        ),
        RegionSpec(
            "head_neck",
            superior=Landmark(("skull",), "top"),
            inferior=Landmark(("clavicula_left", "clavicula_right"), "bottom"),
        ),
        RegionSpec(
            "brain",
            superior=Landmark(("skull",), "top"),
            inferior=Landmark(("brain",), "bottom"),
        ),
    )
}
