"""Benchmark: the PET stages of one clinical-size PET/CT course with the full organ set.

A synthetic course at the realistic preset (512 x 512 x 160 CT at 0.977 x 2.5 mm) with a PET
(``--vendor``), its manual ROIs (``structure_masks``) and the TotalSegmentator stand-in's organs
(``standin_labelmap`` on the CT, one mask per organ in ``masks/totalseg/``, as ``totalseg_masks``
writes them). Timed, each in this process on one core:

* ``pet_images``: the series read, SUV per slice, the SUV image on its grid and on the CT grid;
* ``pet_metrics``: every mask mapped onto the PET grid and measured (per organ: the ratio printed
  against the SUV image's own writing, the baseline measured in the same run);
* the PET radiomics tasks the default policy selects (counted, not extracted).

Prints the PET grid, seconds per stage and per mask, the peak memory of this process, and the PTV's
SUV metrics against the phantom's (SUV 8 in the lesion).

    .venv/bin/python benchmarks/pet_course.py [--vendor ge] [--slices 160] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from dagster import instance_for_test, materialize

from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_resources.course_paths import TOTALSEG, CoursePaths
from rt_resources.fileio import write_json_atomic
from rt_resources.ingest.survey import survey_drop
from rt_resources.pet.course import SUV_BW, course_pet_images, course_pet_metrics
from rt_resources.radiomics.engine import RadiomicsSettings, select_pet_tasks
from rt_resources.segmentation.standin import standin_labelmap
from rt_resources.structures.masks import ROI_INDEX_FILE
from rt_resources.synthetic import REALISTIC, write_patient
from tests.helpers import course_resources


def _organs(paths: CoursePaths) -> int:
    """The stand-in's organs on the CT grid as ``masks/totalseg/<name>.nii.gz`` + ``rois.json``."""
    ct = sitk.ReadImage(str(paths.ct))
    labels, names = standin_labelmap(ct)
    out = paths.masks(TOTALSEG)
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for value, name in sorted(names.items()):
        mask = labels == value
        if not mask.any():
            continue
        image = sitk.GetImageFromArray(mask.astype(np.uint8))
        image.CopyInformation(ct)
        sitk.WriteImage(image, str(out / f"{name}.nii.gz"), True)
        index.append({"roi_name": name, "file": f"{name}.nii.gz", "voxels": int(mask.sum())})
    write_json_atomic(out / ROI_INDEX_FILE, index)
    return len(index)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vendor", default="siemens", choices=("siemens", "ge", "philips"))
    parser.add_argument("--slices", type=int, default=REALISTIC.slices)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="pet_bench_"))
    drop, data = work / "drop", work / "data"
    shutil.rmtree(work, ignore_errors=True)
    drop.mkdir(parents=True)
    t = time.perf_counter()
    write_patient(drop, 0, dataclasses.replace(REALISTIC, slices=args.slices, pet=args.vendor))
    print(f"synthetic course written in {time.perf_counter() - t:.1f} s")
    (key,) = [c.key for c in survey_drop(drop, data).courses]
    resources = course_resources(drop, data, work / "no_weights")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(course_partitions.name, [key])
        course = [course_manifest, ct_image, structure_masks]
        assert materialize(course, partition_key=key, instance=instance, resources=resources).success
    paths = CoursePaths.under(data, key)
    n_organs = _organs(paths)
    manifest = json.loads(paths.manifest.read_text())
    from rt_resources.ingest.manifest import Manifest

    manifest = Manifest.from_json(manifest)

    t = time.perf_counter()
    (record,), refused = course_pet_images(manifest, paths)
    images_s = time.perf_counter() - t
    assert not refused, refused
    suv = sitk.ReadImage(str(paths.pet / "pet1" / SUV_BW))
    t = time.perf_counter()
    sitk.WriteImage(suv, str(work / "suv_copy.nii.gz"), True)
    write_s = time.perf_counter() - t

    t = time.perf_counter()
    table, notes = course_pet_metrics(paths, key)
    metrics_s = time.perf_counter() - t
    tasks, skipped = select_pet_tasks(paths.pet, RadiomicsSettings(policy="default"))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    print(f"PET grid {record['size']} at {record['spacing_mm']} mm ({args.vendor}, {record['units']})")
    print(f"masks: {n_organs} stand-in organs + manual = {len(table)} ROIs measured")
    print(f"pet_images   {images_s:6.1f} s")
    print(f"pet_metrics  {metrics_s:6.1f} s = {metrics_s / len(table):.3f} s per ROI")
    print(f"  per ROI / writing the SUV image once ({write_s:.3f} s): {metrics_s / len(table) / write_s:.2f}x")
    print(f"PET radiomics tasks (default policy): {len(tasks)}, skipped {len(skipped)}")
    print(f"peak memory of this process: {peak_mb:.0f} MB")
    ptv = table[(table.roi_name == "PTV") & (table.source == "manual")].iloc[0]
    print(f"PTV: SUVmax {ptv.suv_max:.4f}, SUVmean {ptv.suv_mean:.4f}, SUVpeak {ptv.suv_peak:.4f} (phantom: 8)")
    print(f"notes: {len(notes)}" + (f", e.g. {notes[0]}" if notes else ""))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
