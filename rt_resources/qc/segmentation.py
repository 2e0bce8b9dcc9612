"""Check of the automatic segmentation: the organs the scanned body region should show.

``autoseg_completeness`` (WARN) infers the body regions from TotalSegmentator's vertebra masks
(a vertebra counts from :data:`MIN_VERTEBRA_CC`) and lists the organs of
:data:`EXPECTED_ORGANS` expected there that are missing or empty.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rt_resources.qc.results import WARN, QcResult
from rt_resources.segmentation.crop import LUNG_LOBES as _LUNG_LOBES  # one list of lobes

#: a vertebra mask counts as a level the scan covers from this volume (TotalSegmentator's
#: false positives are small blobs; a vertebral body is 10-40 cc)
MIN_VERTEBRA_CC = 1.0
#: TotalSegmentator's vertebra classes per spine region
_VERTEBRAE = {
    "cervical": tuple(f"vertebrae_C{i}" for i in range(1, 8)),
    "thoracic": tuple(f"vertebrae_T{i}" for i in range(1, 13)),
    "lumbar": tuple(f"vertebrae_L{i}" for i in range(1, 6)),
    "sacral": ("vertebrae_S1", "sacrum"),
}


def _T(*levels: int) -> tuple[str, ...]:
    return tuple(f"vertebrae_T{i}" for i in levels)


#: TotalSegmentator ``total`` organs expected when the scan covers a level:
#: organ -> (region, anchor classes: any present (>= MIN_VERTEBRA_CC) makes the organ expected,
#: organ classes: any non-empty counts as found). Anchors are levels where the organ lies in
#: every adult anatomy, not the organ's whole range, so a scan ending nearby does not warn
#: (a head-and-neck CT reaching T2-T4 expects lungs, trachea and esophagus, not the heart).
EXPECTED_ORGANS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "trachea": ("cervical/thoracic", ("vertebrae_C7", *_T(1, 2, 3)), ("trachea",)),
    "esophagus": ("thoracic", _T(2, 3, 4, 5, 6, 7, 8, 9), ("esophagus",)),
    "lungs": ("thoracic", _T(2, 3, 4, 5, 6, 7, 8, 9), _LUNG_LOBES),
    "heart": ("thoracic", _T(7, 8), ("heart",)),
    "aorta": ("thoracic/lumbar", (*_T(5, 6, 7, 8, 9, 10, 11, 12), "vertebrae_L1", "vertebrae_L2"), ("aorta",)),
    "liver": ("upper lumbar", ("vertebrae_T12", "vertebrae_L1"), ("liver",)),
    "spleen": ("upper lumbar", ("vertebrae_T11", "vertebrae_T12"), ("spleen",)),
    "kidney_left": ("upper lumbar", ("vertebrae_L1", "vertebrae_L2"), ("kidney_left",)),
    "kidney_right": ("upper lumbar", ("vertebrae_L2",), ("kidney_right",)),
    "hip_left": ("pelvis", ("sacrum", "vertebrae_S1"), ("hip_left",)),
    "hip_right": ("pelvis", ("sacrum", "vertebrae_S1"), ("hip_right",)),
    "urinary_bladder": ("pelvis", ("femur_left", "femur_right"), ("urinary_bladder",)),
}


def autoseg_completeness(totalseg_dir: Path, volumes_cc: dict[str, float] | None = None) -> QcResult:
    """Body regions from TotalSegmentator's vertebra masks and the organs expected there
    (:data:`EXPECTED_ORGANS`) that are missing or empty (WARN); no vertebra at all: WARN,
    the body region cannot be inferred. ``volumes_cc``: every class's volume when the caller
    has it (the label map), so no mask is read again; an empty class then has no file."""
    import SimpleITK as sitk

    name, asset = "autoseg_completeness", "totalseg_masks"
    totalseg_dir = Path(totalseg_dir)
    files = {p.name[: -len(".nii.gz")]: p for p in totalseg_dir.glob("*.nii.gz")}
    volume_cc: dict[str, float] = dict(volumes_cc or {})
    if volumes_cc is not None:
        files.update({cls: totalseg_dir / f"{cls}.nii.gz" for cls in volumes_cc if cls not in files})

    def cc(cls: str) -> float:  # 0 for absent or empty; each mask read at most once
        if cls not in volume_cc:
            if cls in files:
                mask = sitk.ReadImage(str(files[cls]))
                n = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
                volume_cc[cls] = n * float(np.prod(mask.GetSpacing())) / 1000.0
            else:
                volume_cc[cls] = 0.0
        return volume_cc[cls]

    levels = [v for group in _VERTEBRAE.values() for v in group if cc(v) >= MIN_VERTEBRA_CC]
    regions = [region for region, group in _VERTEBRAE.items() if set(group) & set(levels)]
    expected, present, missing = {}, [], {}
    for organ, (region, anchors, classes) in EXPECTED_ORGANS.items():
        hit = [a for a in anchors if (cc(a) >= MIN_VERTEBRA_CC if a.startswith("vertebrae_") else cc(a) > 0)]
        if not hit:
            continue
        expected[organ] = {"region": region, "because": hit[:3]}
        if any(cc(c) > 0 for c in classes):
            present.append(organ)
        else:
            missing[organ] = "empty mask" if any(c in files for c in classes) else "no mask file"
    metadata = {
        "regions": regions,
        "vertebrae": [v.removeprefix("vertebrae_") for v in levels],
        "expected": expected,
        "present": present,
        "missing": missing,
        "n_masks": len(files),
    }
    if not files:
        return QcResult(name, asset, False, WARN, f"no TotalSegmentator masks in {totalseg_dir}", metadata)
    if not levels:
        return QcResult(name, asset, False, WARN, "cannot infer body region: no vertebra segmented", metadata)
    if missing:
        lines = [f"{o} ({why}; expected at {', '.join(expected[o]['because'])})" for o, why in missing.items()]
        return QcResult(name, asset, False, WARN, f"{'/'.join(regions)} scan, missing: " + "; ".join(lines), metadata)
    return QcResult(
        name,
        asset,
        True,
        WARN,
        f"{'/'.join(regions)} scan ({metadata['vertebrae'][0]}-{metadata['vertebrae'][-1]}): "
        f"all {len(present)} expected organs present",
        metadata,
    )
