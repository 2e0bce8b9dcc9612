"""Identifiers in one place only: a drop exported the way hospitals do it (folders named after
the patient, names in plan and structure set labels, private tags, odd PatientIDs) goes through
`rtpipeline run`; afterwards no PatientID, name, birth date, accession number or folder name is in
any file of the Dagster instance (run and event databases, everything), nor in the research
tables; the key map holds them, readable by its owner only."""

import json
import shutil
import stat

import pandas as pd
import pydicom
import pytest

from rt_resources.synthetic import SynthOptions, write_patient
from tests.headless.helpers import run_cli
from tests.helpers import SMALL

OPTS = SynthOptions(**{**SMALL.__dict__, "boost": True, "mr": True})
#: (PatientID, PatientName, birth date, accession): long and distinctive, so a byte scan cannot
#: find them by chance in compressed or random data
PATIENTS = [
    ("RTPRIV-7734-QX", "Quixotefamily^Zebulonia", "18930317", "ACCRTPRIV55123"),
    ("../../RTPRIV/5521", "Müllerstrand^Jürgenwald", "18870611", "ACCRTPRIV55124"),  # path parts, non-ASCII
    ("RTPRIV\x07CTRL-991", "Longnamefamily" * 16 + "^Ximenaria", "18990101", "ACCRTPRIV55125"),  # control, 200+
]
BROKEN = ("RTPRIV-BROKEN-4410", "Brokenfamily^Wilhelmina", "18950909", "ACCRTPRIV55126")


def folder_of(name: str) -> str:
    """How exports name a patient's folder: after the PatientName."""
    return name.replace("^", "_")[:120]


def identify(path, pid: str, name: str, birth: str, accession: str) -> None:
    """Give a synthetic file the patient's identity, in the places real exports put it."""
    ds = pydicom.dcmread(path)
    family = name.split("^")[0]
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.AccessionNumber = pid, name, birth, accession
    ds.OtherPatientIDs = pid
    if "RTPlanLabel" in ds:
        ds.RTPlanLabel = f"{family[:10]} bst"  # planners write the name into labels
        ds.RTPlanName = name
    if "StructureSetLabel" in ds:
        ds.StructureSetLabel = family[:16]
        ds.StructureSetName = name
    ds.SeriesDescription = f"{family} {ds.get('Modality', '')}"
    block = ds.private_block(0x0011, "RTPRIV TEST", create=True)  # a vendor's private tag with the ID
    block.add_new(0x01, "LO", pid)
    ds.save_as(path)


def build_drop(drop, staging) -> list[tuple]:
    everyone = [*PATIENTS, BROKEN]
    for i, identity in enumerate(everyone):
        patient = write_patient(staging, i, OPTS)
        for f in patient.folder.rglob("*.dcm"):
            identify(f, *identity)
        if identity is BROKEN:  # a course that fails: its error names files
            next(patient.folder.rglob("CT_0006.dcm")).unlink()
        shutil.move(str(patient.folder), drop / folder_of(identity[1]))
    return everyone


def forms(value: str) -> set[bytes]:
    """The byte forms an identifier can take in storage: UTF-8, JSON-escaped, and its longest
    ASCII run (what survives any escaping)."""
    out = {value.encode(), json.dumps(value)[1:-1].encode()}
    runs = [r for r in "".join(c if c.isascii() and c.isalnum() else " " for c in value).split() if len(r) >= 8]
    out |= {max(runs, key=len).encode()} if runs else set()
    return {b for b in out if len(b) >= 8}


def needles(identities) -> dict[bytes, str]:
    found = {}
    for pid, name, birth, accession in identities:
        for label, value in (
            ("PatientID", pid),
            ("PatientName", name),
            ("birth date", birth),
            ("accession", accession),
            ("folder", folder_of(name)),
        ):
            for form in forms(value):
                found[form] = f"{label} {value[:40]!r}"
        for part in name.split("^"):
            for form in forms(part):
                found[form] = f"name part {part[:40]!r}"
    return found


def scan(files, wanted: dict[bytes, str]) -> list[str]:
    hits = []
    for path in files:
        data = path.read_bytes()
        hits += [f"{path}: {what}" for needle, what in wanted.items() if needle in data]
    return hits


@pytest.mark.slow
def test_no_identifier_outside_the_key_map(drop, tmp_path):
    identities = build_drop(drop, tmp_path / "staging")
    out = tmp_path / "out"
    proc = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out))
    assert proc.returncode == 1, proc.stdout + proc.stderr  # the broken course fails, the others go on
    assert "3 processed" in proc.stdout and "1 failed" in proc.stdout
    wanted = needles(identities)
    assert len(wanted) > 30

    # the scan finds what is there: the drop itself, and the local files that name source paths
    assert scan(list(drop.rglob("*.dcm"))[:3], wanted)
    assert scan(list((out / "courses").glob("c-*/manifest.json")), wanted)
    home = out / ".dagster"
    instance_files = [p for p in home.rglob("*") if p.is_file()]
    assert any(p.suffix == ".db" for p in instance_files)
    assert scan(instance_files, wanted) == []  # the run and event databases, the settings, everything

    research = [p for p in (out / "courses").rglob("*") if p.is_file() and p.suffix in (".parquet", ".png")]
    research += [p for p in (out / "courses").rglob("*.json") if "refused" not in p.parts and p.name != "manifest.json"]
    research += [
        p for p in (out / "cohort").rglob("*.parquet") if p.name not in ("courses.parquet", "ingest_report.parquet")
    ]
    assert {p.name for p in research} >= {"dvh_metrics.parquet", "radiomics.parquet", "qc.json", "dose.json"}
    assert scan(research, wanted) == []
    for table in ("dvh_metrics", "radiomics", "qc"):
        assert "patient_id" not in pd.read_parquet(out / "cohort" / f"{table}.parquet").columns
    for manifest in (out / "courses").glob("c-*/manifest.json"):
        doc = json.loads(manifest.read_text())
        assert "patient_id" not in doc and "patient_name" not in doc
        assert not any("label" in f.get("info", {}) for f in doc["files"])

    key_map = out / "cohort" / "courses.parquet"  # the one place, owner-only
    assert stat.S_IMODE(key_map.stat().st_mode) == 0o600
    courses = pd.read_parquet(key_map)
    assert set(courses["patient_id"]) == {pid for pid, *_ in identities}
    assert "Quixotefamily^Zebulonia" in set(courses["patient_name"])

    # the failed course's error, in Dagster, names its files by id; the ingest report has the paths
    report = pd.read_parquet(out / "cohort" / "ingest_report.parquet")
    broken = courses.set_index("patient_id").loc[BROKEN[0], "course_key"]
    refused = report[report["course_key"] == broken]
    assert set(refused["stage"]) == {"ct_image"} and refused["path"].str.startswith(folder_of(BROKEN[1])).all()
    first = courses.set_index("patient_id").loc[PATIENTS[0][0], "course_key"]
    audit = run_cli("audit", "--outdir", str(out), "--course", first)
    assert audit.returncode == 0 and folder_of(PATIENTS[0][1]) in audit.stdout  # real paths, read locally


@pytest.mark.slow
def test_key_map_outside_the_data_root(drop, tmp_path):
    patient = write_patient(tmp_path / "staging", 0, SMALL)
    for f in patient.folder.rglob("*.dcm"):
        identify(f, *PATIENTS[0])
    shutil.move(str(patient.folder), drop / folder_of(PATIENTS[0][1]))
    out, private = tmp_path / "out", tmp_path / "private" / "keys.parquet"
    settings = tmp_path / "settings.yaml"
    settings.write_text(f"key_map: {private}\n")
    proc = run_cli("run", "--dicom-root", str(drop), "--outdir", str(out), "--settings", str(settings))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert private.exists() and stat.S_IMODE(private.stat().st_mode) == 0o600
    assert not (out / "cohort" / "courses.parquet").exists()
    assert PATIENTS[0][0] in set(pd.read_parquet(private)["patient_id"])
