"""The course manifest: the one record of which source files make a course.

Written by the ``course_manifest`` asset; every later stage resolves its inputs through
it and checks their sha256, so an output can always be tied to the exact bytes it came
from.
"""

from __future__ import annotations

import json
from pathlib import Path

from rt_resources.ingest.linking import Course
from rt_resources.provenance import sha256_file, tool_versions

MANIFEST_SCHEMA = "rtpipeline.manifest/1"
MANIFEST_NAME = "manifest.json"
#: the manifest fields that identify a course's DICOM sources (recorded as lineage metadata)
SOURCE_UID_FIELDS = (
    "ct_study_uid",
    "ct_series_uid",
    "frame_of_reference_uid",
    "rtstruct_uids",
    "rtplan_uids",
    "rtdose_uids",
    "registration_uids",
)


class ManifestError(ValueError):
    """A manifest that is missing, malformed, or no longer matches the drop."""


def build_manifest(course: Course, drop_root: Path) -> dict:
    """The course's manifest: its UIDs and every source file (drop-relative path, sha256). Keyed
    by the course key only: no PatientID or name (the key map, cohort/courses.parquet, has them)
    and no free-text labels."""
    return {
        "schema": MANIFEST_SCHEMA,
        "course_key": course.key,
        "ct_study_uid": course.study_uid,
        "ct_series_uid": course.ct_series_uid,
        "frame_of_reference_uid": course.for_uid,
        "rtstruct_uids": course.struct_uids,
        "rtplan_uids": course.plan_uids,
        "rtdose_uids": course.dose_uids,
        "registration_uids": course.reg_uids,
        "other_series_uids": course.other_series_uids,
        "fingerprint": course.fingerprint,
        "drop_root": str(Path(drop_root).resolve()),
        "notes": course.notes,
        "created_by": tool_versions(),
        "files": [
            {
                "path": f.path,
                "kind": f.header.kind,
                "sop_class_uid": f.header.sop_class_uid,
                "sop_instance_uid": f.header.sop_instance_uid,
                "series_uid": f.header.series_uid,
                "frame_of_reference_uid": f.header.for_uid,
                "sha256": f.sha256,
                "size": f.size,
                **({"info": _coded(f.header.info)} if f.header.kind not in ("CT", "MR", "PT") else {}),
            }
            for f in course.files
        ],
    }


#: header fields that are free text (labels, descriptions): never copied into the manifest, since
#: planners write patients' names there (an index written before they were dropped may hold them)
FREE_TEXT_INFO = ("label", "description", "name")


def _coded(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in FREE_TEXT_INFO}


def read_manifest(course_dir: Path) -> dict:
    """Load ``<course_dir>/manifest.json``."""
    path = Path(course_dir) / MANIFEST_NAME
    if not path.exists():
        raise ManifestError(f"{path} does not exist: materialize course_manifest for this course first")
    manifest = json.loads(path.read_text())
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError(f"{path}: schema {manifest.get('schema')!r}, expected {MANIFEST_SCHEMA}")
    return manifest


def source_files(manifest: dict, kind: str, series_uid: str | None = None) -> list[dict]:
    """The manifest's file entries of one kind (and series), each with an absolute ``abspath``.

    Paths are resolved under the manifest's drop root and refused if they escape it;
    each file's sha256 is checked against the manifest, so a file changed after the
    manifest was written fails loudly instead of silently feeding a different input.
    """
    drop_root = Path(manifest["drop_root"]).resolve()
    chosen = []
    for entry in manifest["files"]:
        if entry["kind"] != kind or (series_uid is not None and entry["series_uid"] != series_uid):
            continue
        path = (drop_root / entry["path"]).resolve()
        if not path.is_relative_to(drop_root):
            raise ManifestError(f"manifest path {entry['path']!r} escapes the drop folder {drop_root}")
        if not path.exists():
            raise ManifestError(f"{path} listed in the manifest no longer exists: re-materialize course_manifest")
        if sha256_file(path) != entry["sha256"]:
            raise ManifestError(
                f"{path} changed since the manifest was written (sha256 differs): re-materialize course_manifest"
            )
        chosen.append({**entry, "abspath": path})
    return chosen


def primary_structure_set(manifest: dict) -> str | None:
    """SOP Instance UID of the course's structure set: the one its plans reference most, else the first."""
    structs = list(manifest.get("rtstruct_uids") or [])
    if not structs:
        return None
    votes = {uid: 0 for uid in structs}
    for entry in manifest["files"]:
        if entry["kind"] == "RTPLAN":
            for uid in entry.get("info", {}).get("ref_struct_uids", []):
                if uid in votes:
                    votes[uid] += 1
    return max(structs, key=lambda uid: (votes[uid], -structs.index(uid)))
