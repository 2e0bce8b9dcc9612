"""De-identified export: the Basic Profile tag by tag, references, re-ingest, refusals, changed sources.

One module fixture builds two synthetic patients (CT, RTSTRUCT, primary + boost RTPLAN/RTDOSE, MR +
REG) carrying extra identifiers, runs the course assets on them, and exports both courses; patient
1 has one CT slice with burned-in annotation, so the re-ingest uses patient 0.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pydicom
import pytest
from dagster import instance_for_test, materialize
from dicomanonymizer.dicom_anonymization_databases import dicomfields_2026c as table
from pydicom.tag import Tag

from rt_assets.assets.cohort.cohort_dvh_metrics import cohort_dvh_metrics
from rt_assets.assets.course.course_manifest import course_manifest
from rt_assets.assets.course.ct_image import ct_image
from rt_assets.assets.course.dose_grid import dose_grid
from rt_assets.assets.course.dvh import dvh
from rt_assets.assets.course.structure_masks import structure_masks
from rt_assets.partitions import course_partitions
from rt_resources.export import ExportError, ExportUsageError, export_course, export_courses
from rt_resources.ingest.survey import survey_drop
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL, course_resources, tree_digest

COURSE = [course_manifest, ct_image, dose_grid, structure_masks, dvh]
OPTS = dataclasses.replace(SMALL, boost=True, mr=True)
SECRET = b"export-test-secret"
#: PatientID, PatientName, birth date, accession number, other ID, address, private value
PATIENTS = [
    ("PX-440917", "Vandermolen^Ottilie", "19530817", "ACC-99817", "ALT-7731-0", "17 Quayside Row, Dunwich", "HX-0091"),
    ("QZ-551208", "Karamanlis^Ignatius", "19610322", "ACC-55120", "ALT-7731-1", "4 Tannery Lane, Orford", "HX-0092"),
]
SITE = ("St Brigid Infirmary", "Ratched^Mildred", "Kildare^Rodolfo")  # institution, operator, physician
BURNED_IN_SLICE = 5  #: InstanceNumber of the CT slice of patient 1 marked BurnedInAnnotation YES
CATEGORIES = (
    "D_TAGS",
    "Z_TAGS",
    "X_TAGS",
    "U_TAGS",
    "Z_D_TAGS",
    "X_Z_TAGS",
    "X_D_TAGS",
    "X_Z_D_TAGS",
    "X_Z_U_STAR_TAGS",
)
PROFILE_TAGS = {Tag(*t) for c in CATEGORIES for t in getattr(table, c) if len(t) == 2}
ROI_NAME = Tag("ROIName")  # kept against the profile (Z), listed in the report
CLASS_UIDS = {"SOPClassUID", "ReferencedSOPClassUID", "MediaStorageSOPClassUID", "TransferSyntaxUID"}


def expected_uid(old: str) -> str:
    """The UID method as specified, computed independently of the code under test."""
    return "2.25." + str(int.from_bytes(hmac.new(SECRET, old.encode(), hashlib.sha256).digest()[:16], "big"))


def add_identifiers(path: Path) -> None:
    ds = pydicom.dcmread(path)
    pid, name, birth, acc, other, address, private = next(p for p in PATIENTS if p[0] == ds.PatientID)
    family, given = name.split("^")
    ds.PatientBirthDate, ds.AccessionNumber, ds.OtherPatientIDs, ds.PatientAddress = birth, acc, other, address
    ds.InstitutionName, ds.OperatorsName, ds.PerformingPhysicianName = SITE
    ds.PatientComments = f"{given} {family} prefers morning slots"
    ds.private_block(0x0011, "ACME HOSPITAL", create=True).add_new(0x01, "LO", private)
    if ds.Modality == "RTSTRUCT":
        ds.StructureSetLabel = family
        ds.StructureSetROISequence[0].ROIDescription = f"drawn for {given} {family}"
    if ds.Modality == "RTPLAN":
        ds.RTPlanLabel = f"{given[0]} {family}"
        ds.DoseReferenceSequence[0].DoseReferenceDescription = name
        ds.BeamSequence[0].private_block(0x0013, "ACME BEAMS", create=True).add_new(0x01, "LO", private)
    if ds.Modality == "CT":
        ds.ImageComments = name
        if pid == PATIENTS[1][0] and int(ds.InstanceNumber) == BURNED_IN_SLICE:
            ds.BurnedInAnnotation = "YES"
    ds.save_as(path, enforce_file_format=True)


@pytest.fixture(scope="module")
def done(tmp_path_factory):
    root = tmp_path_factory.mktemp("export")
    with pytest.MonkeyPatch.context() as mp, instance_for_test() as instance:
        mp.setenv("RT_SITE_SECRET", "test-secret")
        pristine, drop, data_root = root / "pristine", root / "drop", root / "data"
        for i, p in enumerate(PATIENTS):
            write_patient(pristine, i, OPTS, patient_id=p[0], patient_name=p[1])
        shutil.copytree(pristine, drop)
        for path in drop.rglob("*.dcm"):
            add_identifiers(path)
        resources = course_resources(drop, data_root, root / "home")
        survey = survey_drop(drop, data_root)
        keys = {c.patient_id: c.key for c in survey.courses}
        instance.add_dynamic_partitions(course_partitions.name, list(keys.values()))
        for key in keys.values():
            assert materialize(COURSE, partition_key=key, instance=instance, resources=resources).success
        assert materialize([cohort_dvh_metrics], instance=instance, resources=resources).success
        for name in ("courses.parquet", "ingest_report.parquet"):  # identifying: must never be exported
            if not (data_root / "cohort" / name).exists():
                pd.DataFrame({"course_key": list(keys.values()), "patient_id": list(keys)}).to_parquet(
                    data_root / "cohort" / name
                )
        before = {"drop": tree_digest(drop), "data": tree_digest(data_root / "courses")}
        dest = root / "export"
        reports = {r.course_key: r for r in export_courses(data_root, dest, SECRET)}
        yield SimpleNamespace(
            root=root,
            drop=drop,
            data_root=data_root,
            dest=dest,
            keys=keys,
            reports=reports,
            before=before,
            instance=instance,
        )


def exported(done, key: str) -> dict[Path, pydicom.Dataset]:
    return {p: pydicom.dcmread(p) for p in sorted((done.dest / key / "dicom").rglob("*.dcm"))}


def manifest(done, key: str) -> dict:
    return json.loads((done.data_root / "courses" / key / "manifest.json").read_text())


def walk(ds, path=()):
    """(path, element) of every element, sequences included."""
    for elem in ds:
        yield path, elem
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                yield from walk(item, (*path, elem.tag, i))


def find(ds, path, tag):
    """The element at ``path`` + ``tag`` in ``ds``, or None when any step is gone."""
    for i in range(0, len(path), 2):
        seq = ds.get(path[i])
        if seq is None or len(seq.value) <= path[i + 1]:
            return None
        ds = seq.value[path[i + 1]]
    return ds.get(tag)


def test_every_profile_attribute_is_removed_emptied_or_replaced(done):
    checked = 0
    for key in done.keys.values():
        for entry in manifest(done, key)["files"]:
            original = pydicom.dcmread(done.drop / entry["path"])
            out = done.dest / key / "dicom" / entry["kind"] / f"{expected_uid(entry['sop_instance_uid'])}.dcm"
            if not out.exists():
                continue  # the refused slice (test_burned_in_annotation_is_refused)
            export = pydicom.dcmread(out)
            for path, elem in walk(original):
                if elem.tag not in PROFILE_TAGS:
                    continue
                new = find(export, path, elem.tag)
                if elem.tag == ROI_NAME:
                    assert new is not None and new.value == elem.value
                    continue
                checked += 1
                assert new is None or new.is_empty or str(new.value) != str(elem.value), (out, path, elem)
    assert checked > 1000

    needles = set(SITE) | {"Ratched", "Mildred", "Kildare", "Rodolfo", "ACME"}
    for p in PATIENTS:
        needles |= set(p) | set(p[1].split("^"))
    originals = b"".join(f.read_bytes() for f in done.drop.rglob("*.dcm"))
    assert all(n.encode() in originals for n in needles)  # the test is meaningful
    files = [f for f in done.dest.rglob("*") if f.is_file()]
    assert {f.suffix for f in files} == {".dcm", ".json", ".parquet"}
    for f in files:
        data = f.read_bytes()
        found = [n for n in needles if n.encode() in data or n.upper().encode() in data]
        assert not found, (f, found)


def test_references_resolve_and_no_source_uid_remains(done):
    key = done.keys[PATIENTS[0][0]]
    objects = exported(done, key)
    defined = set()
    for ds in objects.values():
        defined |= {str(ds.get(k, "")) for k in ("SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID")}
        defined |= {str(ds.get("FrameOfReferenceUID", ""))}
        defined |= {str(r.DoseReferenceUID) for r in ds.get("DoseReferenceSequence", []) if "DoseReferenceUID" in r}
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    defined.discard("")
    references = 0
    for ds in objects.values():
        if ds.Modality not in ("RTSTRUCT", "RTPLAN", "RTDOSE", "REG"):
            continue
        for _, elem in walk(ds):
            if elem.VR == "UI" and elem.keyword not in CLASS_UIDS:
                references += 1
                assert str(elem.value) in defined, (ds.Modality, elem)
                assert str(elem.value).startswith("2.25.") and len(str(elem.value)) <= 64
    assert references > 50

    by_uid = {str(ds.SOPInstanceUID): ds for ds in objects.values()}
    sources = manifest(done, key)["files"]
    assert {expected_uid(f["sop_instance_uid"]) for f in sources} == set(by_uid)
    for f in sources:
        ds = by_uid[expected_uid(f["sop_instance_uid"])]
        assert ds.SOPClassUID == f["sop_class_uid"]
        assert ds.SeriesInstanceUID == expected_uid(f["series_uid"])
    all_sources = [f for k in done.keys.values() for f in manifest(done, k)["files"]]
    source_uids = {f["sop_instance_uid"] for f in all_sources} | {f["series_uid"] for f in all_sources}
    for f in done.dest.rglob("*"):
        if f.is_file():
            text = f.read_bytes()
            assert not [u for u in source_uids if u.encode() in text], f

    # what the pipeline computes from is untouched
    for f in sources:
        original = pydicom.dcmread(done.drop / f["path"])
        ds = by_uid[expected_uid(f["sop_instance_uid"])]
        for kw in ("PixelData", "ImagePositionPatient", "PixelSpacing", "DoseGridScaling", "GridFrameOffsetVector"):
            assert ds.get(kw) == original.get(kw), (f["kind"], kw)
        if f["kind"] == "REG":
            matrix = "FrameOfReferenceTransformationMatrix"
            assert [list(e.value) for _, e in walk(ds) if e.keyword == matrix] == [
                list(e.value) for _, e in walk(original) if e.keyword == matrix
            ]
        if f["kind"] == "RTPLAN":
            assert (
                ds.DoseReferenceSequence[0].TargetPrescriptionDose
                == original.DoseReferenceSequence[0].TargetPrescriptionDose
            )
            assert ds.FractionGroupSequence == original.FractionGroupSequence


def test_export_is_reingested_with_the_same_dvh(done):
    new_root = done.root / "reingest"
    survey = survey_drop(done.dest, new_root)
    assert {c.patient_id for c in survey.courses} == set(done.keys.values())  # PatientID is the course key
    for course in survey.courses:
        counts = pd.Series([f.header.kind for f in course.files]).value_counts().to_dict()
        source = pd.Series([f["kind"] for f in manifest(done, course.patient_id)["files"]]).value_counts().to_dict()
        refused = len(done.reports[course.patient_id].refused)
        assert counts == {**source, "CT": source["CT"] - refused}

    original_key = done.keys[PATIENTS[0][0]]
    course = next(c for c in survey.courses if c.patient_id == original_key)
    done.instance.add_dynamic_partitions(course_partitions.name, [course.key])
    resources = course_resources(done.dest, new_root, done.root / "home")
    assert materialize(COURSE, partition_key=course.key, instance=done.instance, resources=resources).success

    def table(path):
        frame = pd.read_parquet(path).drop(columns="course_key")
        return frame.sort_values(["roi_name", "source"]).reset_index(drop=True)

    again = table(new_root / "courses" / course.key / "dvh_metrics.parquet")
    first = table(done.data_root / "courses" / original_key / "dvh_metrics.parquet")
    assert len(again) == len(first) > 5
    pd.testing.assert_frame_equal(again, first, check_exact=False, rtol=0, atol=1e-9)
    shipped = table(done.dest / original_key / "tables" / "dvh_metrics.parquet")
    pd.testing.assert_frame_equal(shipped, first)


def test_burned_in_annotation_is_refused(done):
    key = done.keys[PATIENTS[1][0]]
    report = done.reports[key]
    slice_entry = next(
        f
        for f in manifest(done, key)["files"]
        if f["kind"] == "CT" and int(pydicom.dcmread(done.drop / f["path"]).InstanceNumber) == BURNED_IN_SLICE
    )
    uid = expected_uid(slice_entry["sop_instance_uid"])
    assert len(report.refused) == 1
    assert report.refused[0]["sop_instance_uid"] == uid and report.refused[0]["kind"] == "CT"
    assert "BurnedInAnnotation" in report.refused[0]["reason"]
    assert not (done.dest / key / "dicom" / "CT" / f"{uid}.dcm").exists()
    n_ct = sum(f["kind"] == "CT" for f in manifest(done, key)["files"])
    assert report.written["CT"] == n_ct - 1 and report.written["RTSTRUCT"] == 1 and report.written["RTDOSE"] == 2
    document = json.loads((done.dest / key / "export.json").read_text())
    assert document["files"]["refused"] == report.refused
    assert any("refused" in w for w in document["warnings"])
    assert done.reports[done.keys[PATIENTS[0][0]]].refused == []


def test_private_tags_removed_and_deidentification_recorded(done):
    for key in done.keys.values():
        for path, ds in exported(done, key).items():
            assert not [e for _, e in walk(ds) if e.tag.is_private], path
            assert ds.PatientIdentityRemoved == "YES"
            codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DeidentificationMethodCodeSequence]
            assert codes == [("113100", "DCM")]  # no option is claimed
            assert any("Basic Application Level Confidentiality" in m for m in ds.DeidentificationMethod)
            assert ds.PatientID == key and str(ds.PatientName) == key
            assert all(len(m) <= 64 for m in ds.DeidentificationMethod)
            for kw in ("StructureSetName", "RTPlanName", "SeriesDescription", "StudyDescription", "PatientComments"):
                assert kw not in ds or not ds[kw].value, (path, kw)
            assert not [e for _, e in walk(ds) if e.keyword in ("ROIDescription", "DoseReferenceDescription")]
            if ds.Modality == "RTSTRUCT":
                assert ds.StructureSetLabel == "RTSTRUCT"
            if ds.Modality == "RTPLAN":
                assert ds.RTPlanLabel in ("PLAN1", "PLAN2")
        document = json.loads((done.dest / key / "export.json").read_text())
        assert document["profile"]["table"] == "dicomfields_2026c"
        assert document["profile"]["library"] == {
            "name": "dicom-anonymizer",
            "import": "dicomanonymizer",
            "version": "2.1.0",
        }
        assert [k["attribute"] for k in document["kept_against_profile"]] == ["ROIName"]
        assert document["options"]["implemented"] == [] and "113101" in document["options"]["not_implemented"]
        assert "HMAC-SHA256" in document["uid_method"]["method"]
        assert {t["table"] for t in document["tables"]} == {"dvh_metrics.parquet", "dvh_curves.parquet", "qc.json"}

    cohort = pd.read_parquet(done.dest / "cohort" / "dvh_metrics.parquet")
    assert set(cohort["course_key"]) == set(done.keys.values())
    assert sorted(p.name for p in (done.dest / "cohort").iterdir()) == ["dvh_metrics.parquet", "export.json"]
    assert tree_digest(done.drop) == done.before["drop"]
    assert tree_digest(done.data_root / "courses") == done.before["data"]


def test_changed_source_fails_its_course_only(done):
    changed = done.root / "drop_changed"
    shutil.copytree(done.drop, changed)
    bad_key, good_key = done.keys[PATIENTS[0][0]], done.keys[PATIENTS[1][0]]
    plan = next(f["path"] for f in manifest(done, bad_key)["files"] if f["kind"] == "RTPLAN")
    with open(changed / plan, "ab") as f:
        f.write(b"\0\0")
    dest = done.root / "export_changed"
    reports = {r.course_key: r for r in export_courses(done.data_root, dest, SECRET, drop_root=changed)}
    assert not reports[bad_key].ok and str((changed / plan).resolve()) in reports[bad_key].error
    assert "changed since the manifest" in reports[bad_key].error
    assert not (dest / bad_key).exists()
    assert reports[good_key].ok and reports[good_key].written == done.reports[good_key].written
    names = sorted(p.name for p in (dest / good_key / "dicom").rglob("*.dcm"))
    assert names == sorted(p.name for p in (done.dest / good_key / "dicom").rglob("*.dcm"))  # deterministic
    assert set(pd.read_parquet(dest / "cohort" / "dvh_metrics.parquet")["course_key"]) == {good_key}

    with pytest.raises(ExportError, match="changed since the manifest"):
        export_course(done.data_root / "courses" / bad_key, done.root / "export_single", SECRET, drop_root=changed)
    with pytest.raises(ExportUsageError, match=good_key):
        export_courses(done.data_root, dest, SECRET, course_keys=["c-000000000000"])
    with pytest.raises(ExportUsageError, match="does not exist"):
        export_courses(done.root / "nowhere", dest, SECRET)
    with pytest.raises(ExportUsageError, match="inside the drop"):
        export_courses(done.data_root, done.drop / "export", SECRET)
    with pytest.raises(ExportUsageError, match="data root"):
        export_courses(done.data_root, done.data_root, SECRET)


def test_profile_rules_on_a_crafted_object():
    """Sequence rules, overlays, nested private tags and standard UIDs, which the synthetic data lacks."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    from rt_resources.export.profile import Deidentifier
    from rt_resources.export.uids import UidMap

    def ref(uid: str) -> Dataset:
        item = Dataset()
        item.ReferencedSOPClassUID, item.ReferencedSOPInstanceUID = CTImageStorage, uid
        return item

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, "1.2.3.4.5.6", "CT"
    ds.PatientName, ds.PatientID, ds.ContentDescription = "Doe^Jane", "MRN123", "scan of Jane Doe"
    ds.ReferencedImageSequence = [ref("1.2.3.4.5.7")]  # X/Z/U*: kept, instance UID replaced
    ds.ReferencedStudySequence = [ref("1.2.3.4.5.8")]  # X/Z: no items
    ds.ReferencedPerformedProcedureStepSequence = [ref("1.2.3.4.5.9")]  # X/Z/D: removed
    ds.ReferencedImageSequence[0].private_block(0x0019, "ACME", create=True).add_new(0x01, "LO", "MRN123")
    ds.add_new(0x60003000, "OW", b"\0" * 8)  # Overlay Data: X
    ds.add_new(0x60004000, "LT", "Jane Doe")  # Overlay Comments: X
    ds.add_new(0x50000010, "US", 3)  # Curve Data group: X
    Deidentifier(UidMap(b"k")).apply(ds, "c-0123456789ab")

    item = ds.ReferencedImageSequence[0]
    assert item.ReferencedSOPClassUID == CTImageStorage and item.ReferencedSOPInstanceUID.startswith("2.25.")
    assert not [e for e in item if e.tag.is_private]
    assert len(ds.ReferencedStudySequence) == 0 and "ReferencedPerformedProcedureStepSequence" not in ds
    assert ds.ContentDescription == "" and not [t for t in ds.keys() if t.group in (0x5000, 0x6000)]
    assert ds.SOPClassUID == CTImageStorage and ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert ds.PatientID == ds.PatientName == "c-0123456789ab"


def test_residual_identifiers_are_found_by_word():
    from pydicom.dataset import Dataset

    from rt_resources.export.residual import Identifiers, dataset_texts

    source = Dataset()
    source.PatientID, source.PatientName = "MRN123", "Doe^Jane"
    ids = Identifiers()
    ids.add_source(source)
    roi = Dataset()
    roi.ROIName = "PTV jane doe"
    out = Dataset()
    out.StructureSetROISequence = [roi]
    out.StationName, out.ManufacturerModelName, out.SeriesDescription = "DOE", "Doeskin 3000", "MRN1234"
    assert ids.search(dataset_texts(out)) == (["ROIName"], ["StationName"])


def test_tables_lose_patient_columns_and_source_uids():
    from rt_resources.export.tables import clean_frame
    from rt_resources.export.uids import UidMap

    frame = pd.DataFrame(
        {
            "course_key": ["c-0123456789ab"] * 2,
            "patient_id": ["MRN123"] * 2,
            "patient_name": ["Doe^Jane"] * 2,
            "note": ["series 1.2.826.0.1.3680043.8.498.1 of version 3.11.7", None],
            "mean_gy": [1.0, 2.0],
        }
    )
    out, changes = clean_frame(frame, UidMap(SECRET), "c-0123456789ab")
    assert list(out.columns) == ["course_key", "patient_id", "note", "mean_gy"] and len(changes) == 3
    assert (out["patient_id"] == "c-0123456789ab").all()
    assert out["note"][0] == f"series {expected_uid('1.2.826.0.1.3680043.8.498.1')} of version 3.11.7"
    assert out["note"][1] is None or pd.isna(out["note"][1])
