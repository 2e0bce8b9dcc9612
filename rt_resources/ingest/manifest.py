"""The course manifest: the one record of which source files make a course.

Written by the ``course_manifest`` asset; every later stage resolves its inputs through
it and checks their sha256, so an output can always be tied to the exact bytes it came
from.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rt_resources.dicom.sop_classes import IMAGE_KINDS, Kind
from rt_resources.fileio import write_json_atomic
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


@dataclass(frozen=True)
class ManifestFile:
    """One source file of the course, as the manifest lists it. ``abspath`` is set only by
    :func:`source_files`, once the file is found under the drop root with its recorded sha256."""

    path: str  #: relative to the drop root
    kind: Kind
    sop_class_uid: str
    sop_instance_uid: str
    series_uid: str
    frame_of_reference_uid: str
    sha256: str
    size: int
    info: dict[str, Any] = field(default_factory=dict)  #: coded header facts (RT objects only)
    abspath: Path | None = None

    @classmethod
    def from_json(cls, entry: dict) -> ManifestFile:
        fields = {k: entry[k] for k in _FILE_FIELDS if k in entry}
        return cls(
            **{**fields, "kind": Kind(entry["kind"]), "frame_of_reference_uid": entry.get("frame_of_reference_uid", "")}
        )

    def to_json(self) -> dict:
        out = {k: getattr(self, k) for k in _FILE_FIELDS if k != "info"}
        out["kind"] = str(self.kind)
        return {**out, **({"info": self.info} if self.kind not in IMAGE_KINDS else {})}


_FILE_FIELDS = (
    "path",
    "kind",
    "sop_class_uid",
    "sop_instance_uid",
    "series_uid",
    "frame_of_reference_uid",
    "sha256",
    "size",
    "info",
)


@dataclass(frozen=True)
class Manifest:
    """``courses/<key>/manifest.json``: which source files make the course (written by the
    ``course_manifest`` asset; every later stage resolves its inputs through it)."""

    course_key: str
    ct_study_uid: str
    ct_series_uid: str
    frame_of_reference_uid: str
    rtstruct_uids: list[str]
    rtplan_uids: list[str]
    rtdose_uids: list[str]
    registration_uids: list[str]
    other_series_uids: list[str]
    fingerprint: str
    drop_root: Path
    notes: list[str]
    created_by: dict[str, str]
    files: list[ManifestFile]
    schema: str = MANIFEST_SCHEMA

    def of_kind(self, *kinds: Kind, series_uid: str | None = None) -> list[ManifestFile]:
        """The listed files of these kinds (and series), as listed: not checked on disk."""
        return [f for f in self.files if f.kind in kinds and (series_uid is None or f.series_uid == series_uid)]

    def on_drop(self, drop_root: Path) -> Manifest:
        """The same manifest read against another mount of the drop (its paths are drop-relative)."""
        return dataclasses.replace(self, drop_root=Path(drop_root).resolve())

    def source_uids(self) -> dict[str, Any]:
        """The UIDs that identify the course's DICOM sources (lineage metadata)."""
        return {k: getattr(self, k) for k in SOURCE_UID_FIELDS}

    @classmethod
    def from_json(cls, doc: dict) -> Manifest:
        names = {f.name for f in dataclasses.fields(cls)} - {"files", "drop_root"}
        return cls(
            **{k: doc[k] for k in names if k in doc},
            drop_root=Path(doc["drop_root"]),
            files=[ManifestFile.from_json(e) for e in doc["files"]],
        )

    def to_json(self) -> dict:
        doc = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in ("files", "schema")}
        return {
            "schema": self.schema,
            **doc,
            "drop_root": str(self.drop_root),
            "files": [f.to_json() for f in self.files],
        }


def build_manifest(course: Course, drop_root: Path) -> Manifest:
    """The course's manifest: its UIDs and every source file (drop-relative path, sha256). Keyed
    by the course key only: no PatientID or name (the key map, cohort/courses.parquet, has them)
    and no free-text labels."""
    return Manifest(
        course_key=course.key,
        ct_study_uid=course.study_uid,
        ct_series_uid=course.ct_series_uid,
        frame_of_reference_uid=course.for_uid,
        rtstruct_uids=list(course.struct_uids),
        rtplan_uids=list(course.plan_uids),
        rtdose_uids=list(course.dose_uids),
        registration_uids=list(course.reg_uids),
        other_series_uids=list(course.other_series_uids),
        fingerprint=course.fingerprint,
        drop_root=Path(drop_root).resolve(),
        notes=list(course.notes),
        created_by=tool_versions(),
        files=[
            ManifestFile(
                path=f.path,
                kind=f.header.kind,
                sop_class_uid=f.header.sop_class_uid,
                sop_instance_uid=f.header.sop_instance_uid,
                series_uid=f.header.series_uid,
                frame_of_reference_uid=f.header.for_uid,
                sha256=f.sha256,
                size=f.size,
                info=_coded(f.header.info) if f.header.kind not in IMAGE_KINDS else {},
            )
            for f in course.files
        ],
    )


#: header fields that are free text (labels, descriptions): never copied into the manifest, since
#: planners write patients' names there (an index written before they were dropped may hold them)
FREE_TEXT_INFO = ("label", "description", "name")


def _coded(info: dict) -> dict:
    return {k: v for k, v in info.items() if k not in FREE_TEXT_INFO}


def write_manifest(course_dir: Path, manifest: Manifest) -> Path:
    """Write ``<course_dir>/manifest.json`` atomically."""
    return write_json_atomic(Path(course_dir) / MANIFEST_NAME, manifest.to_json())


def read_manifest(course_dir: Path) -> Manifest:
    """Load ``<course_dir>/manifest.json``."""
    path = Path(course_dir) / MANIFEST_NAME
    if not path.exists():
        raise ManifestError(f"{path} does not exist: materialize course_manifest for this course first")
    try:
        doc = json.loads(path.read_text())
    except ValueError as exc:
        raise ManifestError(f"{path} is not valid JSON: {exc}") from exc
    if doc.get("schema") != MANIFEST_SCHEMA:
        raise ManifestError(f"{path}: schema {doc.get('schema')!r}, expected {MANIFEST_SCHEMA}")
    try:
        return Manifest.from_json(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise ManifestError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from exc


def source_files(manifest: Manifest, kind: Kind, series_uid: str | None = None) -> list[ManifestFile]:
    """The manifest's files of one kind (and series), each with its absolute ``abspath``.

    Paths are resolved under the manifest's drop root and refused if they escape it;
    each file's sha256 is checked against the manifest, so a file changed after the
    manifest was written fails loudly instead of silently feeding a different input.
    """
    drop_root = Path(manifest.drop_root).resolve()
    if not drop_root.is_dir():
        import socket

        raise ManifestError(
            f"drop folder {drop_root} is not there on {socket.gethostname()}: mount the drop on this worker, "
            "or set RT_DROP_ROOT to where it is mounted here (manifests list drop-relative paths)"
        )
    chosen = []
    for entry in manifest.of_kind(kind, series_uid=series_uid):
        path = (drop_root / entry.path).resolve()
        if not path.is_relative_to(drop_root):
            raise ManifestError(f"manifest path {entry.path!r} escapes the drop folder {drop_root}")
        if not path.exists():
            raise ManifestError(f"{path} listed in the manifest no longer exists: re-materialize course_manifest")
        if sha256_file(path) != entry.sha256:
            raise ManifestError(
                f"{path} changed since the manifest was written (sha256 differs): re-materialize course_manifest"
            )
        chosen.append(dataclasses.replace(entry, abspath=path))
    return chosen


def primary_structure_set(manifest: Manifest) -> str | None:
    """SOP Instance UID of the course's structure set: the one its plans reference most, else the first."""
    structs = list(manifest.rtstruct_uids)
    if not structs:
        return None
    votes = {uid: 0 for uid in structs}
    for entry in manifest.of_kind(Kind.RTPLAN):
        for uid in entry.info.get("ref_struct_uids", []):
            if uid in votes:
                votes[uid] += 1
    return max(structs, key=lambda uid: (votes[uid], -structs.index(uid)))
