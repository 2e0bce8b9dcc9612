"""Export processed courses, de-identified, for sharing outside the site.

Layout of an export (file names come from new UIDs and course keys only, never from tag values)::

    dest/<course_key>/dicom/<KIND>/<new SOP Instance UID>.dcm
    dest/<course_key>/tables/dvh_metrics.parquet, dvh_curves.parquet, dvh_eqd2.parquet, agreement.parquet,
                              radiomics.parquet, pet_metrics.parquet, qc.json
    dest/<course_key>/export.json        the report: profile, table, library, what was kept and why
    dest/cohort/dvh_metrics.parquet, radiomics.parquet, export.json   (export_courses)

The sources are exactly the files of the course manifest, each checked against its sha256: an
export of other bytes than those the research tables were computed from would pair tables with the
wrong images. Each object is de-identified by :mod:`.profile` with one :class:`~.uids.UidMap` for
the whole course; an image with burned-in annotation is refused (listed, not written). A course is
built in a folder beside its target and swapped in whole, after the residual-identifier check
(:mod:`.residual`) has run on what was written: a course that fails leaves the previous export,
never half of a new one. Nothing under the drop folder or the data root is written.

The export re-enters this pipeline as a drop: the PatientID is the course key, references resolve,
and geometry, contours and dose are untouched, so the same DVHs come out.
"""

from __future__ import annotations

import functools
import hashlib
import io
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pydicom

from rt_resources.dicom.sop_classes import Kind
from rt_resources.export import profile
from rt_resources.export.report import SCHEMA, report_document
from rt_resources.export.residual import Identifiers, dataset_texts
from rt_resources.export.tables import COURSE_TABLES, export_cohort_tables, export_table, screen_tables
from rt_resources.export.uids import UidMap
from rt_resources.fileio import is_course_key, replace_dir_atomic, write_atomic, write_json_atomic
from rt_resources.ingest.manifest import Manifest, ManifestError, ManifestFile, read_manifest

REPORT_NAME = "export.json"


class ExportError(ValueError):
    """A course that cannot be exported: names the file and what is wrong with it."""


class ExportUsageError(ExportError):
    """A request that cannot be carried out for any course (unknown key, bad destination)."""


@dataclass
class ExportReport:
    """What one course's export wrote, refused and why; ``error`` set when the course failed."""

    course_key: str
    output: Path | None = None
    written: dict[str, int] = field(default_factory=dict)  #: files written per kind
    refused: list[dict] = field(default_factory=list)  #: {sop_instance_uid (export UID), kind, reason}
    tables: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def export_course(course_dir: Path, dest: Path, secret: bytes, drop_root: Path | None = None) -> ExportReport:
    """Export one processed course (``<data_root>/courses/<key>``) to ``dest/<key>``.

    ``secret`` keys the replacement UIDs (keep it with the site secret: the same secret gives the
    same UIDs at every export). ``drop_root`` overrides the manifest's drop folder (a moved drop).
    Raises :class:`ExportError` naming the file when a source is missing, changed or unreadable.
    """
    return _export_course(Path(course_dir), Path(dest), secret, drop_root)[0]


def export_courses(
    data_root: Path, dest: Path, secret: bytes, course_keys: list[str] | None = None, drop_root: Path | None = None
) -> list[ExportReport]:
    """Export every course under ``data_root/courses`` (or ``course_keys``) and the cohort tables.

    A course that fails gets a report with ``error`` set and the others go on; unknown keys, a
    missing data root or a destination inside the data root or the drop raise
    :class:`ExportUsageError`. ``dest/cohort`` receives the cohort DVH and radiomics tables with
    the rows of the exported courses only (never the key map or the ingest report).
    """
    data_root, dest = Path(data_root), Path(dest)
    courses = data_root / "courses"
    if not courses.is_dir():
        raise ExportUsageError(f"{courses} does not exist: {data_root} is not a data root with processed courses")
    known = sorted(p.name for p in courses.iterdir() if p.is_dir() and is_course_key(p.name))
    keys = known if course_keys is None else list(dict.fromkeys(course_keys))
    unknown = [k for k in keys if k not in known]
    if unknown:
        raise ExportUsageError(f"unknown course key(s) {', '.join(unknown)}; known: {', '.join(known) or 'none'}")
    target = dest.resolve()
    root = data_root.resolve()
    if target == root or any(target.is_relative_to(root / d) for d in ("courses", "cohort")):
        raise ExportUsageError(f"destination {dest} would overwrite the data root's own folders; choose another")

    reports, identifiers = [], Identifiers()
    for key in keys:
        try:
            report, ids = _export_course(courses / key, dest, secret, drop_root)
            identifiers.update(ids)
        except ExportUsageError:
            raise
        except Exception as exc:  # one bad course must not stop the others
            message = str(exc) if isinstance(exc, ExportError) else f"{type(exc).__name__}: {exc}"
            report = ExportReport(course_key=key, error=message)
        reports.append(report)

    exported = [r.course_key for r in reports if r.ok]
    cohort = dest / "cohort"
    entries = export_cohort_tables(data_root / "cohort", cohort, exported, UidMap(secret))
    warnings: list[str] = []
    screen_tables(cohort, entries, identifiers, warnings)
    if entries or (cohort / REPORT_NAME).exists():
        write_json_atomic(
            cohort / REPORT_NAME,
            {"schema": SCHEMA, "courses": exported, "tables": entries, "warnings": warnings},
        )
    return reports


def _export_course(
    course_dir: Path, dest: Path, secret: bytes, drop_root: Path | None
) -> tuple[ExportReport, Identifiers]:
    manifest = _read_manifest(course_dir)
    key = manifest.course_key
    drop = Path(drop_root or manifest.drop_root).resolve()
    target = dest.resolve()
    if target.is_relative_to(drop):
        raise ExportUsageError(f"destination {dest} is inside the drop folder {drop}: it would be ingested as new data")
    if target.is_relative_to(course_dir.resolve()) or target == course_dir.resolve().parent:
        raise ExportUsageError(f"destination {dest} would write into the course folders of the data root")

    uids = UidMap(secret)
    deid = profile.Deidentifier(uids)
    identifiers = Identifiers()
    report = ExportReport(course_key=key)
    plans = sorted(uids(f.sop_instance_uid) for f in manifest.of_kind(Kind.RTPLAN))
    labels = {uid: f"PLAN{i}" for i, uid in enumerate(plans, 1)}
    objects: list[dict] = []

    def build(tmp: Path) -> None:
        for entry in manifest.files:
            ds = _read_source(drop, entry)
            identifiers.add_source(ds)
            kind, uid = str(entry.kind), uids(str(ds.SOPInstanceUID))
            if profile.burned_in(ds):
                reason = "BurnedInAnnotation is YES and Clean Pixel Data (113101) is not implemented"
                report.refused.append({"sop_instance_uid": uid, "kind": kind, "reason": reason})
                continue
            deid.apply(ds, key, labels.get(uid, "PLAN1"))
            rel = f"dicom/{kind}/{uid}.dcm"
            write_atomic(tmp / rel, functools.partial(_save, ds))
            objects.append({"kind": kind, "sop_instance_uid": uid, "file": rel})
        for name in COURSE_TABLES:
            if (course_dir / name).exists():
                report.tables.append(export_table(course_dir / name, tmp / "tables" / name, uids, key))
        _screen_objects(tmp, objects, identifiers, report)
        screen_tables(tmp / "tables", report.tables, identifiers, report.warnings)
        if report.refused:
            report.warnings.append(
                f"{len(report.refused)} object(s) refused: references to them from the exported objects (such as "
                "the structure set's Contour Image Sequence) do not resolve; a series with a refused image has a gap"
            )
        report.written = dict(sorted(Counter(o["kind"] for o in objects).items()))
        write_json_atomic(tmp / REPORT_NAME, report_document(report, objects))

    replace_dir_atomic(dest / key, build)
    report.output = dest / key
    return report, identifiers


def _read_manifest(course_dir: Path) -> Manifest:
    try:
        return read_manifest(course_dir)
    except ManifestError as exc:
        raise ExportError(str(exc)) from None


def _read_source(drop: Path, entry: ManifestFile) -> pydicom.Dataset:
    """The source file of a manifest entry, parsed from the very bytes whose sha256 was checked."""
    path = (drop / entry.path).resolve()
    if not path.is_relative_to(drop):
        raise ExportError(f"manifest path {entry.path!r} escapes the drop folder {drop}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ExportError(f"{path} is listed in the manifest but no longer exists") from None
    except OSError as exc:
        raise ExportError(f"{path} cannot be read: {exc}") from None
    # the digest of provenance.sha256_file, taken over the bytes that are parsed (no second read)
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ExportError(
            f"{path} changed since the manifest was written (sha256 differs): its research tables were computed "
            "from other bytes; re-run the course before exporting it"
        )
    try:
        return pydicom.dcmread(io.BytesIO(data))
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise ExportError(f"{path} is not readable as DICOM: {type(exc).__name__}: {exc}") from None


def _save(ds: pydicom.Dataset, path: Path) -> None:
    ds.save_as(path, enforce_file_format=True)


def _screen_objects(folder: Path, objects: list[dict], identifiers: Identifiers, report: ExportReport) -> None:
    """Refuse written objects that still hold an identifier; count name-part hits per attribute."""
    parts: Counter = Counter()
    for obj in list(objects):
        path = folder / obj["file"]
        hard, soft = identifiers.search(dataset_texts(pydicom.dcmread(path, stop_before_pixels=True)))
        if hard:
            path.unlink()
            objects.remove(obj)
            reason = f"an identifier of the patient remains in {', '.join(hard)} after de-identification"
            report.refused.append({"sop_instance_uid": obj["sop_instance_uid"], "kind": obj["kind"], "reason": reason})
        parts.update(soft)
    for attribute, n in sorted(parts.items()):
        report.warnings.append(
            f"a part of the patient's name occurs as a word in {attribute} ({n} objects): check it is not the name"
        )
