"""Every output path of a course, in one place: ``<data_root>/courses/<key>/...``.

The layout is the output contract (../shared/ARCHITECTURE.md); assets, engines, the audit and the
export all take their paths from :class:`CoursePaths`, so a file is renamed here or nowhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rt_resources.fileio import course_dir

MANIFEST = "manifest.json"
CT = "ct.nii.gz"
DOSE = "dose.nii.gz"
DOSE_INFO = "dose.json"
DOSE_PHASES = "dose_phases"  #: one physical dose per treatment phase (plan), on the total's grid
MASKS = "masks"
DVH_METRICS = "dvh_metrics.parquet"
DVH_CURVES = "dvh_curves.parquet"
DVH_EQD2 = "dvh_eqd2.parquet"
AGREEMENT = "agreement.parquet"
RADIOMICS = "radiomics.parquet"
RADIOMICS_ROBUSTNESS = "radiomics_robustness.parquet"
RADIOMICS_PERTURBATIONS = "radiomics_perturbations.parquet"
QC = "qc.json"
QC_PARTS = "qc"
PREVIEW = "preview"
MR = "mr"
PET = "pet"  #: pet/<label>/: SUV volumes, masks on the PET grid, the SUV record
PET_METRICS = "pet_metrics.parquet"
CROPS = "crops"
REFUSED = "refused"
TOTALSEG_RTSTRUCT = "rtstruct_totalseg.dcm"
SEGMENTATION = "segmentation"  #: the segmentation model's input and label map

#: mask sources (``masks/<source>/``) with a fixed name; nnU-Net models add one folder per model
MANUAL, TOTALSEG, CUSTOM = "manual", "totalseg", "custom"
RESERVED_SOURCES = (MANUAL, TOTALSEG, CUSTOM)


def mask_source_dirs(masks_root: Path) -> dict[str, Path]:
    """Every ``masks/<source>/`` folder, by source name (sorted); hidden folders (a folder being
    replaced atomically: ``.<source>.<id>.tmp`` / ``.old``) are not sources."""
    root = Path(masks_root)
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if p.is_dir() and not p.name.startswith(".")}


@dataclass(frozen=True)
class CoursePaths:
    """The files and folders of one course's outputs."""

    root: Path

    @classmethod
    def under(cls, data_root: Path, key: str) -> CoursePaths:
        """The course ``key`` under ``data_root`` (anything but a course key is refused)."""
        return cls(course_dir(data_root, key))

    @property
    def key(self) -> str:
        return self.root.name

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def ct(self) -> Path:
        return self.root / CT

    @property
    def dose(self) -> Path:
        return self.root / DOSE

    @property
    def dose_info(self) -> Path:
        return self.root / DOSE_INFO

    @property
    def dose_phases(self) -> Path:
        return self.root / DOSE_PHASES

    @property
    def masks_root(self) -> Path:
        return self.root / MASKS

    def masks(self, source: str = MANUAL) -> Path:
        """``masks/<source>/``: manual, totalseg, custom or an nnU-Net model's name."""
        return self.root / MASKS / source

    def mask_sources(self) -> dict[str, Path]:
        """Every ``masks/<source>/`` folder present, by source name (sorted)."""
        return mask_source_dirs(self.masks_root)

    @property
    def dvh_metrics(self) -> Path:
        return self.root / DVH_METRICS

    @property
    def dvh_curves(self) -> Path:
        return self.root / DVH_CURVES

    @property
    def dvh_eqd2(self) -> Path:
        return self.root / DVH_EQD2

    @property
    def agreement(self) -> Path:
        return self.root / AGREEMENT

    @property
    def radiomics(self) -> Path:
        return self.root / RADIOMICS

    @property
    def radiomics_robustness(self) -> Path:
        return self.root / RADIOMICS_ROBUSTNESS

    @property
    def radiomics_perturbations(self) -> Path:
        return self.root / RADIOMICS_PERTURBATIONS

    @property
    def qc(self) -> Path:
        return self.root / QC

    @property
    def qc_parts(self) -> Path:
        return self.root / QC_PARTS

    def preview(self, name: str) -> Path:
        return self.root / PREVIEW / name

    @property
    def mr(self) -> Path:
        return self.root / MR

    @property
    def pet(self) -> Path:
        return self.root / PET

    @property
    def pet_metrics(self) -> Path:
        return self.root / PET_METRICS

    @property
    def crops(self) -> Path:
        return self.root / CROPS

    @property
    def refused(self) -> Path:
        return self.root / REFUSED

    @property
    def totalseg_rtstruct(self) -> Path:
        return self.root / TOTALSEG_RTSTRUCT

    @property
    def segmentation(self) -> Path:
        """``segmentation/``: the model's input and raw output (at the model's spacing), kept so a
        step after the GPU one can be re-run without inference."""
        return self.root / SEGMENTATION

    @property
    def totalseg_input(self) -> Path:
        return self.segmentation / "totalseg_input.nii.gz"

    @property
    def totalseg_labels(self) -> Path:
        return self.segmentation / "totalseg_labels.nii.gz"
