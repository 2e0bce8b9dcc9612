"""Structures of a course as masks on the CT grid (``masks/<source>/<roi>.nii.gz`` + ``rois.json``).

:func:`write_masks` writes the manual ROIs' masks and their records (``rois.json``);
:func:`mask_index` lists the masks of any source folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rt_resources.structures.names import sanitize_roi_names
from rt_resources.structures.rasterize import rasterize_contours

if TYPE_CHECKING:  # rtstruct pulls in pydicom: the previews list masks without it
    from rt_resources.structures.rtstruct import ROI

ROI_INDEX_FILE = "rois.json"


def write_masks(rois: list[ROI], ct_image, folder: Path) -> list[dict]:
    """Write one uint8 mask per ROI with contours into ``folder``; describe every ROI.

    Returns one record per ROI (also the ones without contours, marked ``empty``): its exact
    name, number, file, contour count, voxel count, volume in cc and notes.
    """
    import SimpleITK as sitk

    stems = sanitize_roi_names([r.name for r in rois])
    voxel_cc = float(np.prod(ct_image.GetSpacing())) / 1000.0
    records = []
    for roi in rois:
        record = {
            "roi_number": roi.number,
            "roi_name": roi.name,
            "interpreted_type": roi.interpreted_type,
            "file": None,
            "n_contours": len(roi.contours),
            "voxels": 0,
            "volume_cc": 0.0,
            "empty": roi.empty,
            "notes": list(roi.skipped),
        }
        if not roi.empty:
            result = rasterize_contours(roi.contours, ct_image)
            record["notes"] += result.notes
            mask = sitk.GetImageFromArray(result.mask)
            mask.CopyInformation(ct_image)
            name = f"{stems[roi.name]}.nii.gz"
            sitk.WriteImage(mask, str(Path(folder) / name), True)
            record.update(file=name, voxels=int(result.mask.sum()))
            record["volume_cc"] = record["voxels"] * voxel_cc
            if record["voxels"] == 0:
                record["notes"].append("no voxel centre inside the contours on the CT grid")
        else:
            record["notes"].append("ROI has no contours")
        records.append(record)
    return records


def mask_index(masks_dir: Path) -> list[dict]:
    """``{"roi_name", "file", "path", "interpreted_type"}`` of every mask in a ``masks/<source>/`` folder.

    Names and types come from ``rois.json`` when present (in its order; an ROI without contours
    has no file and is left out; an unreadable index is ignored); other ``*.nii.gz`` files are
    named by their stem. Hidden files are not masks.
    """
    masks_dir = Path(masks_dir)
    out: list[dict] = []
    listed = set()
    index = masks_dir / ROI_INDEX_FILE
    entries = []
    if index.is_file():
        try:
            entries = json.loads(index.read_text())
        except ValueError:
            entries = []
    for r in entries if isinstance(entries, list) else []:
        file = Path(r["file"]).name if isinstance(r, dict) and r.get("file") else None
        if file and file not in listed and (masks_dir / file).is_file():
            listed.add(file)
            out.append(
                {
                    "roi_name": str(r.get("roi_name") or file[: -len(".nii.gz")]),
                    "file": file,
                    "path": masks_dir / file,
                    "interpreted_type": str(r.get("interpreted_type", "") or ""),
                }
            )
    for p in sorted(masks_dir.glob("*.nii.gz")):
        if p.name not in listed and not p.name.startswith("."):
            out.append({"roi_name": p.name[: -len(".nii.gz")], "file": p.name, "path": p, "interpreted_type": ""})
    return out
