"""Shared test helpers (plain functions and constants; the fixtures are in conftest.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from rt_resources.synthetic import SynthOptions

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SMALL = SynthOptions(rows=32, slices=12, pixel_mm=10.0, slice_mm=5.0)
#: pyradiomics settings that keep tests fast (Original image, first-order and shape features)
FAST_RADIOMICS = Path(__file__).resolve().parent / "data" / "radiomics_fast.yaml"
#: first-order only, for the tests whose masks are the tiny random model's noise (no shape features)
NOISE_RADIOMICS = Path(__file__).resolve().parent / "data" / "radiomics_firstorder.yaml"


def noise_radiomics_env() -> dict[str, str]:
    """Radiomics settings for runs that segment with the tiny random model."""
    # every set, the light one too: the noise masks span the volume, so many count as very large
    names = ("RT_RADIOMICS_PARAMS", "RT_RADIOMICS_BASIC_PARAMS", "RT_RADIOMICS_LIGHT_PARAMS")
    return {name: str(NOISE_RADIOMICS) for name in names}


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 and mtime of every file under ``root``: proof that a folder was not modified."""
    out = {}
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            out[p.relative_to(root).as_posix()] = (
                hashlib.sha256(p.read_bytes()).hexdigest() + f"@{p.stat().st_mtime_ns}"
            )
    return out


def course_resources(drop, data_root, totalseg_home) -> dict:
    """The resources a course run needs, on small settings (sequential radiomics, one worker)."""
    from rt_resources.resources import (
        ComputeConfig,
        DataRoot,
        DicomDrop,
        RadiomicsConfig,
        RobustnessConfig,
        ScienceConfig,
        SegmentationConfig,
        TotalSegmentator,
    )

    return {
        "data_root": DataRoot(path=str(data_root)),
        "dicom_drop": DicomDrop(path=str(drop), quiet_period_s=0),
        "totalsegmentator": TotalSegmentator(home=str(totalseg_home), device="cpu", fast=True),
        "segmentation_config": SegmentationConfig(device="cpu"),
        "radiomics_config": RadiomicsConfig(
            params=str(FAST_RADIOMICS), basic_params=str(FAST_RADIOMICS), sequential=True
        ),
        "robustness_config": RobustnessConfig(),  # off
        "compute": ComputeConfig(workers=1),
        "science": ScienceConfig(),  # the shipped name and alpha/beta tables
    }


def copy_shared(name: str, dest: Path) -> Path:
    """Copy ``../shared/data/<name>`` under ``dest``; skip the test where the shared data is absent."""
    src = SHARED_DATA / name
    if not src.exists():
        pytest.skip(f"{src} not present (shared test data is only in the project workspace)")
    shutil.copytree(src, dest / name)
    return dest / name


def have_shared() -> bool:
    """Whether ``../shared/data`` is there and readable."""
    return SHARED_DATA.exists() and os.access(SHARED_DATA, os.R_OK)


class Ticker:
    """Evaluates the drop sensor's ticks as the daemon does: cursor carried over, partitions applied."""

    def __init__(self, instance, drop, data_root):
        self.instance, self.drop, self.data_root = instance, drop, data_root
        self.cursor = None

    def tick(self, quiet_period_s: float = 0.0):
        from dagster import build_sensor_context

        from rt_assets.definitions import defs
        from rt_assets.sensors.dicom_drop_sensor import dicom_drop_sensor
        from rt_resources.resources import DataRoot, DicomDrop

        resources = {
            "data_root": DataRoot(path=str(self.data_root)),
            "dicom_drop": DicomDrop(path=str(self.drop), quiet_period_s=quiet_period_s),
        }
        ctx = build_sensor_context(instance=self.instance, cursor=self.cursor, resources=resources, definitions=defs)
        result = dicom_drop_sensor(ctx)
        self.cursor = result.cursor
        for req in result.dynamic_partitions_requests or []:
            self.instance.add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
        return result

    def course_runs(self, result) -> list:
        """The course_job run requests of a tick's result."""
        from rt_assets.constants import COURSE_JOB

        return [r for r in result.run_requests or [] if r.job_name == COURSE_JOB]


def add_uniform_plan_and_dose(course_folder: Path, dose_gy: float = 50.0, fractions: int = 25) -> Path:
    """Write an RTPLAN (``fractions`` fractions, prescription ``dose_gy``, referencing the
    folder's RTSTRUCT) and a PLAN RTDOSE of ``dose_gy`` everywhere on the grid of the folder's CT
    series (same frame of reference, patient and study) into ``course_folder``: a plan and dose for
    real data that comes without them (../shared/data/hnscc). Returns the RTDOSE's path."""
    import numpy as np
    import pydicom
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, RTDoseStorage, RTPlanStorage, generate_uid

    slices, struct = [], None
    for f in sorted(Path(course_folder).rglob("*")):
        if f.is_file():
            try:
                ds = pydicom.dcmread(f, stop_before_pixels=True)
            except Exception:
                continue
            if ds.get("Modality") == "CT":
                slices.append(ds)
            elif ds.get("Modality") == "RTSTRUCT":
                struct = ds
    slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
    first = slices[0]

    def new(sop_class: str, modality: str, path: Path) -> FileDataset:
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = sop_class, generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        for keyword in ("PatientID", "PatientName", "StudyInstanceUID", "FrameOfReferenceUID", "StudyDate"):
            if keyword in first:
                setattr(ds, keyword, first.data_element(keyword).value)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.SeriesInstanceUID, ds.Modality = generate_uid(), modality
        return ds

    plan_path = Path(course_folder) / "RTPLAN_uniform.dcm"
    plan = new(RTPlanStorage, "RTPLAN", plan_path)
    ref = Dataset()
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = struct.SOPClassUID, struct.SOPInstanceUID
    plan.ReferencedStructureSetSequence = [ref]
    target = Dataset()
    target.DoseReferenceNumber, target.DoseReferenceType = 1, "TARGET"
    target.DoseReferenceStructureType, target.TargetPrescriptionDose = "SITE", dose_gy
    plan.DoseReferenceSequence = [target]
    group = Dataset()
    group.FractionGroupNumber, group.NumberOfFractionsPlanned, group.NumberOfBeams = 1, fractions, 0
    plan.FractionGroupSequence = [group]
    plan.save_as(plan_path, enforce_file_format=True)

    path = Path(course_folder) / "RTDOSE_uniform.dcm"
    ds = new(RTDoseStorage, "RTDOSE", path)
    extent = float(slices[-1].ImagePositionPatient[2]) - float(first.ImagePositionPatient[2])
    step = extent / (len(slices) - 1)  # a uniform dose grid over the CT (its slices may be uneven)
    z = [k * step for k in range(len(slices))]
    ds.ImagePositionPatient, ds.ImageOrientationPatient = first.ImagePositionPatient, first.ImageOrientationPatient
    ds.PixelSpacing, ds.Rows, ds.Columns = first.PixelSpacing, first.Rows, first.Columns
    ds.NumberOfFrames, ds.GridFrameOffsetVector = len(slices), [round(v, 4) for v in z]
    ds.FrameIncrementPointer = pydicom.tag.Tag("GridFrameOffsetVector")
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 32
    ds.HighBit, ds.PixelRepresentation = 31, 0
    ds.DoseUnits, ds.DoseType, ds.DoseSummationType = "GY", "PHYSICAL", "PLAN"
    ds.DoseGridScaling = f"{dose_gy / 1000.0:.6g}"
    plan_ref = Dataset()
    plan_ref.ReferencedSOPClassUID, plan_ref.ReferencedSOPInstanceUID = RTPlanStorage, plan.SOPInstanceUID
    ds.ReferencedRTPlanSequence = [plan_ref]
    ds.PixelData = np.full((len(slices), first.Rows, first.Columns), 1000, dtype="<u4").tobytes()
    ds["PixelData"].VR = "OW"
    ds.save_as(path, enforce_file_format=True)
    return path


def plane_points(ds) -> tuple:
    """Patient x, y, z (mm) of each pixel centre of one single-frame slice, from its
    ImagePositionPatient, ImageOrientationPatient and PixelSpacing (arrays of rows x columns)."""
    import numpy as np

    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    dr, dc = float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1])
    r = np.arange(ds.Rows)[:, None]
    c = np.arange(ds.Columns)[None, :]
    return tuple(ipp[a] + c * dc * iop[a] + r * dr * iop[3 + a] for a in range(3))
