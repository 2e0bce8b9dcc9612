"""`rtpipeline` end to end, as a user runs it: real processes, real files, persistent instance."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import SimpleITK as sitk

from rt_resources.synthetic import write_patient
from tests.helpers import SHARED_DATA, SMALL, tree_digest

RTPIPELINE = [sys.executable, "-m", "rt_assets.cli"]


def run_cli(*args, env_extra=None, cwd=None):
    env = {**os.environ, **(env_extra or {})}
    env.pop("DAGSTER_HOME", None)
    return subprocess.run([*RTPIPELINE, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def test_run_processes_good_courses_beside_bad_files(drop, tmp_path):
    write_patient(drop, 0, SMALL)
    write_patient(drop, 1, SMALL)
    broken = write_patient(drop, 2, SMALL)  # its CT loses a slice: this course must fail alone
    next(f.path for f in broken.courses[0].files if f.path.name == "CT_0006.dcm").unlink()
    (drop / "notes.txt").write_text("not dicom")
    ct = next(drop.rglob("CT_0001.dcm")).read_bytes()
    (drop / "cut.dcm").write_bytes(ct[: len(ct) // 3])
    before = tree_digest(drop)
    out = tmp_path / "out"

    proc = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), "--workers", "2")
    assert proc.returncode == 1, proc.stdout + proc.stderr  # one course failed
    assert "=== Parallelization Configuration ===" in proc.stderr
    assert "missing slice" in proc.stdout
    assert tree_digest(drop) == before

    courses = pd.read_parquet(out / "cohort" / "courses.parquet")
    assert len(courses) == 3
    ok = [k for k in courses["course_key"] if (out / "courses" / k / "ct.nii.gz").exists()]
    assert len(ok) == 2
    dvh = pd.read_parquet(out / "cohort" / "dvh_metrics.parquet")
    assert set(dvh["course_key"]) == set(ok)
    rad = pd.read_parquet(out / "cohort" / "radiomics.parquet")
    assert set(rad["course_key"]) == set(ok) and "original_shape_MeshVolume" in rad.columns
    assert {"BODY", "PTV", "Lung_L", "Lung_R"} <= set(dvh["roi_name"])
    for key in ok:
        manifest = json.loads((out / "courses" / key / "manifest.json").read_text())
        assert manifest["course_key"] == key
        assert sitk.ReadImage(str(out / "courses" / key / "ct.nii.gz")).GetSize()[2] == SMALL.slices
    report = pd.read_parquet(out / "cohort" / "ingest_report.parquet").set_index("path")
    assert "not a DICOM file" in report.loc["notes.txt", "reason"]
    assert "truncated" in report.loc["cut.dcm", "reason"]

    # the runs live in the persistent instance, visible to the UI afterwards
    from dagster import DagsterInstance, RunsFilter

    os.environ["DAGSTER_HOME"] = str(out / ".dagster")
    try:
        with DagsterInstance.get() as instance:
            runs = instance.get_runs(RunsFilter(job_name="course_job"))
            assert sorted(r.tags["dagster/partition"] for r in runs) == sorted(courses["course_key"])
            assert all(r.tags["rt/launched_by"] == "cli" for r in runs)
    finally:
        del os.environ["DAGSTER_HOME"]


def test_rerun_is_incremental_and_succeeds(drop, tmp_path):
    write_patient(drop, 0, SMALL)
    out = tmp_path / "out"
    assert run_cli("run", "--dicom-root", str(drop), "--outdir", str(out)).returncode == 0
    again = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), "-v")
    assert again.returncode == 0
    assert "0 parsed" in again.stderr
    # a de-identified copy to share: DICOM by kind and the course's tables
    exported = run_cli("export", "--outdir", str(out), "--to", str(tmp_path / "share"))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    (course,) = (tmp_path / "share").glob("c-*")
    assert {p.name for p in (course / "dicom").iterdir()} >= {"CT", "RTSTRUCT", "RTPLAN", "RTDOSE"}
    assert (course / "tables" / "dvh_metrics.parquet").exists() and (course / "export.json").exists()
    assert not (tmp_path / "share" / "cohort" / "courses.parquet").exists()  # never the key map
    unknown = run_cli("export", "--outdir", str(out), "--to", str(tmp_path / "x"), "--course", "c-000000000000")
    assert unknown.returncode == 2 and "unknown course key" in unknown.stderr


def test_legacy_flags_are_accepted_and_explained(drop, tmp_path):
    write_patient(drop, 0, SMALL)
    proc = run_cli(
        "run",
        "--dicom-root",
        str(drop),
        "--outdir",
        str(tmp_path / "out"),
        "--workers",
        "1",
        "--seg-workers",
        "1",
        "--totalseg-device",
        "cpu",
        "--sequential-radiomics",
    )
    assert proc.returncode == 0, proc.stderr
    assert "segmentation skipped" in proc.stderr and "looked for" in proc.stderr  # no weights here
    assert "sequential, in process" in proc.stderr


def test_outdir_inside_drop_is_refused(drop):
    write_patient(drop, 0, SMALL)
    before = tree_digest(drop)
    proc = run_cli("run", "--dicom-root", str(drop), "--outdir", str(drop / "out"))
    assert proc.returncode == 2 and "never written to" in proc.stderr
    assert tree_digest(drop) == before


def test_site_tables_with_a_typo_stop_the_run_naming_file_and_line(drop, tmp_path):
    """A site's structure-name or alpha/beta file with a mistake is refused before anything runs
    (exit 2), with the file and the line, instead of failing every course's step."""
    write_patient(drop, 0, SMALL)
    names = tmp_path / "names.yaml"
    names.write_text("synonyms:\n  SpinalCord: [Myelon]\n  Parotid_Lft: [LPar]\n")
    proc = run_cli(
        "run", "--dicom-root", str(drop), "--outdir", str(tmp_path / "out"), env_extra={"RT_ROI_NAMES": str(names)}
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert str(names) in proc.stderr and "line 3" in proc.stderr and "Parotid_L" in proc.stderr
    alpha_beta = tmp_path / "ab.yaml"
    alpha_beta.write_text("organs:\n  SpinalCord: {value: 0, source: typo}\n")
    proc = run_cli(
        "run",
        "--dicom-root",
        str(drop),
        "--outdir",
        str(tmp_path / "out"),
        env_extra={"RT_ALPHA_BETA": str(alpha_beta)},
    )
    assert proc.returncode == 2 and str(alpha_beta) in proc.stderr and "SpinalCord" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "out" / "courses").exists()


def test_synth_and_doctor(tmp_path):
    proc = run_cli(
        "synth",
        "--out",
        str(tmp_path / "s"),
        "--patients",
        "2",
        "--rows",
        "16",
        "--slices",
        "6",
        "--boost",
        "--second-course",
        "--beam-doses",
    )
    assert proc.returncode == 0, proc.stderr
    assert "2 patients, 4 courses" in proc.stdout
    doctor = run_cli("doctor")
    assert doctor.returncode == 0
    for word in ("dagster", "pydicom", "torch", "TotalSegmentator", "DAGSTER_HOME", "CPU cores"):
        assert word in doctor.stdout


@pytest.mark.skipif(not SHARED_DATA.exists(), reason="../shared/data is only in the project workspace")
def test_real_data(tmp_path):
    """The real exports in ../shared/data, read in place (read only), every course to a CT volume."""
    before = tree_digest(SHARED_DATA)
    out = tmp_path / "out"
    proc = run_cli("run", "--dicom-root", str(SHARED_DATA), "--outdir", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert tree_digest(SHARED_DATA) == before
    courses = pd.read_parquet(out / "cohort" / "courses.parquet").set_index("patient_id")
    assert set(courses.index) == {"HNSCC-01-0001", "HNSCC-01-0003", "HNSCC-01-0014", "STS_001", "123456"}
    assert courses.loc["123456", "n_rtplan"] == 1 and courses.loc["123456", "n_rtdose"] == 1
    assert "linked to CT series" in courses.loc["STS_001", "notes"]  # referenced series is not in the export
    for pid, n_slices in {"HNSCC-01-0001": 117, "HNSCC-01-0003": 156, "HNSCC-01-0014": 163, "STS_001": 59}.items():
        ct = sitk.ReadImage(str(out / "courses" / courses.loc[pid, "course_key"] / "ct.nii.gz"))
        assert ct.GetSize()[2] == n_slices
    # the dicompyler example: one CT slice, an RTSTRUCT without top-level FrameOfReferenceUID
    manifest = json.loads((out / "courses" / courses.loc["123456", "course_key"] / "manifest.json").read_text())
    assert manifest["frame_of_reference_uid"]
    report = pd.read_parquet(out / "cohort" / "ingest_report.parquet")
    linker = report[report["stage"] == ""]
    assert all("not a DICOM file" in r for r in linker["reason"])  # licences, READMEs, NIfTI
    # DVH: the dicompyler example has plan and dose (14 Gy); the others have none, said so
    dvh = pd.read_parquet(out / "cohort" / "dvh_metrics.parquet")
    assert set(dvh["course_key"]) == {courses.loc["123456", "course_key"]} and "patient_id" not in dvh.columns
    assert len(dvh) == 9 and (dvh["rx_gy"] == 14.0).all()  # every ROI with contours (Areola has none)
    assert "no dose" in proc.stdout
    assert any(Path(p).name == "phantom.nii.gz" for p in report["path"])
    # QC: every course has its checks and a preview; the single-slice CT is flagged, not blocked
    qc = pd.read_parquet(out / "cohort" / "qc.parquet").set_index(["course_key", "check"])
    assert set(qc.index.get_level_values(0)) == set(courses["course_key"])
    single = qc.loc[(courses.loc["123456", "course_key"], "ct_geometry")]
    assert not single["passed"] and single["severity"] == "WARN" and "single CT slice" in single["description"]
    assert qc.loc[(courses.loc["STS_001", "course_key"], "frame_of_reference"), "passed"]
    for key in courses["course_key"]:
        assert (out / "courses" / key / "preview" / "ct_montage.png").exists()
    assert "QC" in proc.stdout and "WARN" in proc.stdout
    # audit: the Heart's mean dose of the dicompyler example back to its RTDOSE file
    key = courses.loc["123456", "course_key"]
    audit = run_cli("audit", "--outdir", str(out), "--course", key, "--roi", "Heart", "--metric", "mean_gy")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    heart = dvh.set_index("roi_name").loc["Heart", "mean_gy"]
    assert f"mean_gy of Heart in course {key}: {heart}" in audit.stdout
    assert "matches the latest materialization" in audit.stdout
    rtdose = next(
        f for f in json.loads((out / "courses" / key / "manifest.json").read_text())["files"] if f["kind"] == "RTDOSE"
    )
    assert rtdose["path"] in audit.stdout and rtdose["sha256"] in audit.stdout
    assert "<- dvh" in audit.stdout and "<- dose_grid" in audit.stdout and "check dvh_sanity: PASS" in audit.stdout
    missing = run_cli("audit", "--outdir", str(out), "--course", key, "--roi", "Nope", "--metric", "mean_gy")
    assert missing.returncode == 2 and "ROIs: " in missing.stderr
