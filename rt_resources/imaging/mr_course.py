"""The MR series of one course, as volumes with the course's manual masks mapped onto them.

An MR belongs to a course when the linker attached it (a REG object involving the planning
CT's frame of reference, or the same frame of reference). For each MR series,
``courses/<key>/mr/<label>/`` holds (``label`` = ``mr1``, ``mr2``, ... in series UID order):

* ``image.nii.gz``: the MR volume (float32, its own grid and frame of reference);
* ``masks/manual/<roi>.nii.gz`` + ``rois.json``: the manual masks (CT grid) resampled onto the
  MR grid, nearest neighbour, through the rigid REG matrix (CT -> MR);
* ``info.json``: series UID, frame of reference, the REG used and its matrix.

The MR is never resampled: radiomics on MR uses the MR's own voxels and intensities.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from rt_resources.course_paths import MANUAL, CoursePaths
from rt_resources.dicom.sop_classes import Kind
from rt_resources.fileio import remove_dirs_except, replace_dir_atomic, write_json_atomic
from rt_resources.imaging.mr_series import masks_on_mr, read_mr_volume
from rt_resources.imaging.registration import read_registration, transform_between
from rt_resources.ingest.manifest import Manifest, source_files
from rt_resources.structures.masks import ROI_INDEX_FILE


def mr_series_of(manifest: Manifest) -> list[str]:
    """Series UIDs of the course's MR images, in a stable order."""
    return sorted({f.series_uid for f in manifest.of_kind(Kind.MR)})


def ct_to_mr_matrix(manifest: Manifest, mr_for: str, modality: str = "MR") -> tuple[np.ndarray, str]:
    """The 4x4 matrix mapping planning-CT points to the points of an MR (or PET: ``modality``) in
    frame of reference ``mr_for``, and where it comes from.

    Same frame of reference: identity. Otherwise the first REG of the course that registers
    both frames; ValueError (naming what the course has) when there is none.
    """
    ct_for = manifest.frame_of_reference_uid
    if mr_for == ct_for:
        return np.eye(4), "same frame of reference as the CT"
    tried = []
    for entry in source_files(manifest, Kind.REG):
        reg = read_registration(entry.abspath)
        known = {reg.reg_for_uid, *reg.matrices}
        if {ct_for, mr_for} <= known:
            return transform_between(reg, ct_for, mr_for), f"REG {reg.sop_instance_uid}"
        tried.append(f"{entry.path} ({', '.join(sorted(known))})")
    raise ValueError(
        f"no REG of the course registers the {modality} frame of reference {mr_for} with the CT's {ct_for}"
        + (f"; REGs: {'; '.join(tried)}" if tried else "; the course has no REG")
    )


def course_mr_images(manifest: Manifest, paths: CoursePaths) -> tuple[list[dict], list[str]]:
    """Write ``mr/<label>/`` for every MR series of the course; returns ``(records, notes)``.

    A series that cannot be read or registered is left out with the reason in ``notes``; the
    others are written.
    """
    import SimpleITK as sitk

    manual = paths.masks(MANUAL)
    rois = json.loads((manual / ROI_INDEX_FILE).read_text()) if (manual / ROI_INDEX_FILE).exists() else []
    records, notes = [], []
    for n, series_uid in enumerate(mr_series_of(manifest), start=1):
        label = f"mr{n}"
        try:
            files = source_files(manifest, Kind.MR, series_uid)
            mr_for = files[0].frame_of_reference_uid
            matrix, via = ct_to_mr_matrix(manifest, mr_for)
            image = read_mr_volume([f.abspath for f in files])
        except ValueError as exc:
            notes.append(f"MR series {series_uid}: {exc}")
            continue
        record = {
            "label": label,
            "series_uid": series_uid,
            "frame_of_reference_uid": mr_for,
            "n_slices": len(files),
            "size": list(image.GetSize()),
            "spacing_mm": [round(v, 4) for v in image.GetSpacing()],
            "registration": via,
            "ct_to_mr": np.round(matrix, 9).tolist(),
        }

        def write(folder: Path, image=image, matrix=matrix, record=record) -> None:
            sitk.WriteImage(image, str(folder / "image.nii.gz"), True)
            out = folder / "masks" / MANUAL
            out.mkdir(parents=True)
            mapped = []
            for roi in rois:
                if not roi.get("file"):
                    continue
                mask = masks_on_mr(sitk.ReadImage(str(manual / roi["file"])), image, matrix)
                sitk.WriteImage(mask, str(out / roi["file"]), True)
                voxels = int(np.count_nonzero(sitk.GetArrayFromImage(mask)))
                mapped.append({"roi_name": roi["roi_name"], "file": roi["file"], "voxels": voxels})
            write_json_atomic(out / ROI_INDEX_FILE, mapped)
            record["n_masks"] = len(mapped)
            write_json_atomic(folder / "info.json", record)

        replace_dir_atomic(paths.mr / label, write)
        records.append(record)
    remove_dirs_except(paths.mr, "mr*", {r["label"] for r in records})
    return records, notes
