"""Manual structures of a course as masks on the CT grid (``masks/manual/<roi>.nii.gz``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rt_resources.structures.names import sanitize_roi_names
from rt_resources.structures.rasterize import rasterize_contours
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
