"""One ledger of every file not used: a corpus of bad and hard cases in one drop, through
`rtpipeline run`; every file is either part of a course's outputs or in
cohort/ingest_report.parquet with its reason (and, when a course refused it while it was
materialized, the course key and the stage)."""

import dataclasses
import shutil

import pandas as pd
import pydicom
import pytest
from pydicom.uid import generate_uid

from rt_resources.synthetic import write_patient
from tests.headless.helpers import run_cli
from tests.helpers import SMALL

BOOST = dataclasses.replace(SMALL, boost=True)


def edit(path, **tags):
    ds = pydicom.dcmread(path)
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.save_as(path, enforce_file_format=True)


def kind_files(folder, prefix):
    return sorted(p for p in folder.rglob("*.dcm") if p.name.startswith(prefix))


def build_corpus(drop):
    """Each case in its own patient folder; returns {case: (folder, expected reason, stage)}."""
    cases = {}

    def patient(i, name, options=SMALL):
        p = write_patient(drop, i, options)
        folder = drop / name
        shutil.move(str(p.folder), folder)
        return folder

    patient(0, "good")
    f = patient(1, "missing_slice")
    kind_files(f, "CT_")[5].unlink()
    cases["missing_slice"] = (f, "missing slice", "ct_image")
    f = patient(2, "gantry_tilt")
    for ct in kind_files(f, "CT_"):
        edit(ct, GantryDetectorTilt=15.0)
    cases["gantry_tilt"] = (f, "gantry tilt", "ct_image")
    f = patient(3, "mixed_orientation")
    edit(kind_files(f, "CT_")[4], ImageOrientationPatient=[-1, 0, 0, 0, 1, 0])
    cases["mixed_orientation"] = (f, "mixed orientation", "ct_image")
    f = patient(4, "relative_dose")
    edit(kind_files(f, "RTDOSE")[0], DoseUnits="RELATIVE")
    cases["relative_dose"] = (f, "RELATIVE", "dose_grid")
    f = patient(5, "dose_other_for", BOOST)
    edit(kind_files(f, "RTDOSE_boost")[0], FrameOfReferenceUID=generate_uid())
    cases["dose_other_for"] = (f, "frame of reference", "ct_image")
    f = patient(6, "plan_missing")
    kind_files(f, "RTPLAN")[0].unlink()
    cases["plan_missing"] = (f, "RTPLAN", "")
    f = patient(7, "ct_missing")
    for ct in kind_files(f, "CT_"):
        ct.unlink()
    cases["ct_missing"] = (f, "CT series", "")
    f = patient(8, "second_structure_set")
    extra = kind_files(f, "RTSTRUCT")[0]
    ds = pydicom.dcmread(extra)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(extra.with_name("RTSTRUCT_copy.dcm"), enforce_file_format=True)
    cases["second_structure_set"] = (f, "primary structure set", "structure_masks")
    f = patient(9, "conflicting_duplicate")
    source = kind_files(f, "CT_")[3]
    ds = pydicom.dcmread(source)
    ds.InstitutionName = "another export"  # same SOP Instance UID, other content
    ds.save_as(drop / "conflicting_copy.dcm", enforce_file_format=True)
    cases["conflicting_duplicate"] = (drop / "conflicting_copy.dcm", "duplicate", "")
    (drop / "notes.txt").write_text("not dicom")
    cases["not_dicom"] = (drop / "notes.txt", "not a DICOM file", "")
    ct = kind_files(drop / "good", "CT_")[0].read_bytes()
    (drop / "cut.dcm").write_bytes(ct[: len(ct) // 3])
    cases["truncated"] = (drop / "cut.dcm", "truncated", "")
    sc = pydicom.dcmread(kind_files(drop / "good", "CT_")[1])
    sc.SOPClassUID = sc.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture
    sc.SOPInstanceUID = sc.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    sc.save_as(drop / "screenshot.dcm", enforce_file_format=True)
    cases["unsupported_class"] = (drop / "screenshot.dcm", "", "")
    return cases


@pytest.mark.slow
def test_every_unused_file_is_in_the_ingest_report(drop, tmp_path):
    cases = build_corpus(drop)
    out = tmp_path / "out"
    proc = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the bad courses fail; the good ones are processed
    report = pd.read_parquet(out / "cohort" / "ingest_report.parquet")
    assert list(report.columns) == ["file_id", "path", "reason", "kind", "course_key", "stage"]
    assert report["reason"].str.len().gt(0).all() and report["file_id"].str.startswith("f-").all()
    reported = set(report["path"])

    for case, (where, reason, stage) in cases.items():
        rel = where.relative_to(drop).as_posix()
        rows = report[report["path"].str.startswith(rel)]
        assert len(rows), f"{case}: nothing of {rel} in the ingest report"
        if reason:
            assert rows["reason"].str.contains(reason, case=False).any(), (case, list(rows["reason"]))
        if stage:
            assert stage in set(rows["stage"]), (case, set(rows["stage"]))
            assert rows.loc[rows["stage"] == stage, "course_key"].str.startswith("c-").all()
    relative = report[report["path"].str.startswith("relative_dose/")]
    assert "RELATIVE" in relative.loc[relative["kind"] == "RTDOSE", "reason"].iloc[0]  # says so, not only "no dose"

    # every file of the drop is in a course's manifest or in the report: none goes unaccounted
    import json

    in_manifests = set()
    for manifest in (out / "courses").glob("c-*/manifest.json"):
        in_manifests |= {f["path"] for f in json.loads(manifest.read_text())["files"]}
    everything = {p.relative_to(drop).as_posix() for p in drop.rglob("*") if p.is_file()}
    assert everything <= in_manifests | reported, sorted(everything - in_manifests - reported)
    assert not any(p.startswith("good/") for p in reported)  # the good course uses all its files
