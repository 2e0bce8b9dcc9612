"""Link indexed DICOM objects into courses by UID.

The chain (DICOM PS3.3):

* RTDOSE -> RTPLAN through ``ReferencedRTPlanSequence``;
* RTPLAN -> RTSTRUCT through ``ReferencedStructureSetSequence``;
* RTSTRUCT -> CT series through ``ReferencedFrameOfReferenceSequence`` ->
  ``RTReferencedStudySequence`` -> ``RTReferencedSeriesSequence``. When the referenced
  series is absent (a cropped or re-exported CT), a CT series with the same frame of
  reference in the referenced study is used, and the course says so in its notes;
* MR and PET series -> the course through a REG involving the planning CT's frame of
  reference, or directly when they share that frame of reference (a PET/CT's PET, an MR
  acquired on the planning couch).

A course is the set of objects planned on one CT study of one patient: a primary and a
boost plan on the same CT are one course; a later treatment on a new CT is another.
Files that are not used are returned as rejections with a reason a person understands.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

from rt_resources.ingest.course_keys import course_key
from rt_resources.ingest.index import FileEntry


@dataclass(frozen=True)
class Rejection:
    """A file of the drop that no course uses, and why."""

    path: str
    reason: str
    kind: str = ""


@dataclass
class Course:
    """Every object of one course, as found in the drop."""

    key: str
    patient_id: str
    patient_name: str
    study_uid: str  #: StudyInstanceUID of the planning CT
    ct_series_uid: str  #: the planning CT series (referenced by the RTSTRUCT)
    for_uid: str  #: FrameOfReferenceUID of the planning CT
    struct_uids: list[str] = field(default_factory=list)
    plan_uids: list[str] = field(default_factory=list)
    dose_uids: list[str] = field(default_factory=list)
    reg_uids: list[str] = field(default_factory=list)
    other_series_uids: list[str] = field(default_factory=list)  #: MR/PT registered to the CT
    files: list[FileEntry] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def fingerprint(self) -> str:
        """sha256 over the course's (SOP Instance UID, file sha256) pairs: content, not mtimes."""
        parts = sorted(f"{f.header.sop_instance_uid}:{f.sha256}" for f in self.files if f.header)
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def files_of(self, kind: str) -> list[FileEntry]:
        return [f for f in self.files if f.header and f.header.kind == kind]

    @property
    def n_ct_slices(self) -> int:
        """Images of the planning CT series."""
        return sum(1 for f in self.files_of("CT") if f.header.series_uid == self.ct_series_uid)


@dataclass
class LinkResult:
    courses: list[Course]
    rejections: list[Rejection]

    def course(self, key: str) -> Course:
        for c in self.courses:
            if c.key == key:
                return c
        raise KeyError(f"course {key} is not in the drop (known: {', '.join(c.key for c in self.courses)})")


def link_courses(entries: list[FileEntry], secret: bytes) -> LinkResult:
    """Group the usable files of a drop into courses; explain every file left out."""
    rejections = [Rejection(e.path, e.error or "unusable", "") for e in entries if not e.ok]
    usable, dup_rejections = _resolve_duplicates([e for e in entries if e.ok])
    rejections += dup_rejections

    by_uid: dict[str, FileEntry] = {}
    series: dict[str, list[FileEntry]] = defaultdict(list)
    by_kind: dict[str, list[FileEntry]] = defaultdict(list)
    for e in usable:
        by_uid[e.header.sop_instance_uid] = e
        by_kind[e.header.kind].append(e)
        if e.header.kind in ("CT", "MR", "PT"):
            series[e.header.series_uid].append(e)
    ct_series = {uid: files for uid, files in series.items() if files[0].header.kind == "CT"}

    courses: dict[tuple[str, str], Course] = {}
    struct_course: dict[str, Course] = {}
    for s in by_kind["RTSTRUCT"]:
        ct_uid, note = _find_ct_series(s, ct_series)
        if ct_uid is None:
            rejections.append(Rejection(s.path, note, "RTSTRUCT"))
            continue
        ct0 = ct_series[ct_uid][0].header
        ident = (ct0.patient_id, ct0.study_uid)
        if ident not in courses:
            courses[ident] = Course(
                key=course_key(ct0.patient_id, ct0.study_uid, secret),
                patient_id=ct0.patient_id,
                patient_name=ct0.patient_name,
                study_uid=ct0.study_uid,
                ct_series_uid=ct_uid,
                for_uid=ct0.for_uid,
            )
            courses[ident].files += ct_series[ct_uid]
        course = courses[ident]
        if ct_uid != course.ct_series_uid and ct_uid not in course.other_series_uids:
            course.notes.append(
                f"RTSTRUCT {s.header.sop_instance_uid} is on CT series {ct_uid}, "
                f"not the planning CT {course.ct_series_uid}; that series is kept as secondary"
            )
            course.other_series_uids.append(ct_uid)
            course.files += ct_series[ct_uid]
        if note:
            course.notes.append(note)
        if s.header.patient_id != course.patient_id:
            course.notes.append(f"RTSTRUCT {s.path} has PatientID differing from its CT")
        course.struct_uids.append(s.header.sop_instance_uid)
        course.files.append(s)
        struct_course[s.header.sop_instance_uid] = course

    plan_course = _attach_referencing(
        by_kind["RTPLAN"], "ref_struct_uids", struct_course, "RTSTRUCT", "ReferencedStructureSetSequence", rejections
    )
    _attach_referencing(
        by_kind["RTDOSE"], "ref_plan_uids", plan_course, "RTPLAN", "ReferencedRTPlanSequence", rejections
    )

    used_series = {c.ct_series_uid for c in courses.values()}
    used_series |= {u for c in courses.values() for u in c.other_series_uids}
    _attach_registrations(courses.values(), by_kind["REG"], series, used_series, rejections)
    _attach_same_frame(courses.values(), series, used_series)

    for uid, files in series.items():
        if uid in used_series:
            continue
        kind = files[0].header.kind
        if kind == "CT":
            reason = f"CT series {uid} has no RTSTRUCT referencing it: not a planning course"
        else:
            reason = (
                f"{kind} series {uid} (frame of reference {files[0].header.for_uid or 'missing'}) shares no "
                "course's planning-CT frame of reference and no REG registers it to one"
            )
        rejections += [Rejection(f.path, reason, kind) for f in files]

    ordered = sorted(courses.values(), key=lambda c: c.key)
    for c in ordered:
        c.files.sort(key=lambda f: f.path)
    return LinkResult(ordered, sorted(rejections, key=lambda r: r.path))


def _attach_referencing(
    children: list[FileEntry],
    ref_field: str,
    parent_course: dict[str, Course],
    parent_kind: str,
    ref_sequence: str,
    rejections: list[Rejection],
) -> dict[str, Course]:
    """Attach RTPLANs (or RTDOSEs) to the course of the object they reference; reject orphans."""
    child_course: dict[str, Course] = {}
    for child in children:
        h = child.header
        refs = h.info.get(ref_field, [])
        course = next((parent_course[u] for u in refs if u in parent_course), None)
        if course is None:
            target = ", ".join(refs) or f"nothing (no {ref_sequence})"
            reason = f"{h.kind} references {parent_kind} {target}, which is not usable in the drop"
            rejections.append(Rejection(child.path, reason, h.kind))
            continue
        if h.for_uid and h.for_uid != course.for_uid:
            course.notes.append(
                f"{h.kind} {h.sop_instance_uid} is on frame of reference {h.for_uid}, "
                f"not the planning CT's {course.for_uid}"
            )
        (course.plan_uids if h.kind == "RTPLAN" else course.dose_uids).append(h.sop_instance_uid)
        course.files.append(child)
        child_course[h.sop_instance_uid] = course
    return child_course


def _resolve_duplicates(entries: list[FileEntry]) -> tuple[list[FileEntry], list[Rejection]]:
    """Keep one file per SOP Instance UID; drop exact copies; drop all copies that disagree."""
    groups: dict[str, list[FileEntry]] = defaultdict(list)
    for e in entries:
        groups[e.header.sop_instance_uid].append(e)
    kept: list[FileEntry] = []
    rejected: list[Rejection] = []
    for uid, group in groups.items():
        keep, refused = resolve_copies(uid, [(e.path, e.sha256, e.header.kind) for e in group])
        kept += [e for e in group if e.path == keep]
        rejected += refused
    return kept, rejected


def resolve_copies(uid: str, group: list[tuple[str, str, str]]) -> tuple[str | None, list[Rejection]]:
    """The files ``(path, sha256, kind)`` holding SOP Instance UID ``uid``: the path of the one
    used (``None`` when copies disagree) and the others' rejections. A group resolves alone, so
    :mod:`rt_resources.ingest.link_state` re-resolves only the groups a change touched."""
    group = sorted(group)
    if len(group) == 1:
        return group[0][0], []
    first = group[0][0]
    if len({sha for _, sha, _ in group}) == 1:
        return first, [Rejection(path, duplicate_reason(first), kind) for path, _, kind in group[1:]]
    others = ", ".join(path for path, _, _ in group)
    reason = (
        f"SOP Instance UID {uid} is in {len(group)} files with different content ({others}); "
        "none is used until the conflict is resolved"
    )
    return None, [Rejection(path, reason, kind) for path, _, kind in group]


def duplicate_reason(used_path: str) -> str:
    """Why an identical copy of the file at ``used_path`` is not used."""
    return f"duplicate of {used_path} (same SOP Instance UID, identical content)"


def _find_ct_series(struct: FileEntry, ct_series: dict[str, list[FileEntry]]) -> tuple[str | None, str]:
    info = struct.header.info
    for uid in info.get("ref_series_uids", []):
        if uid in ct_series:
            return uid, ""
    fors = set(info.get("ref_for_uids", [])) | set(info.get("roi_for_uids", []))
    studies = set(info.get("ref_study_uids", [])) | {struct.header.study_uid}
    candidates = [
        uid
        for uid, files in ct_series.items()
        if files[0].header.for_uid in fors and files[0].header.study_uid in studies
    ]
    referenced = ", ".join(info.get("ref_series_uids", [])) or "none"
    if candidates:
        best = max(candidates, key=lambda uid: len(ct_series[uid]))
        return best, (
            f"RTSTRUCT {struct.header.sop_instance_uid} references CT series {referenced}, which is not in "
            f"the drop; linked to CT series {best} by FrameOfReferenceUID and StudyInstanceUID"
        )
    return None, (
        f"RTSTRUCT references CT series {referenced} (frame of reference {', '.join(sorted(fors)) or 'none'}), "
        "which is not in the drop"
    )


def _attach_registrations(courses, regs, series, used_series, rejections) -> None:
    by_for = {c.for_uid: c for c in courses}
    for r in regs:
        fors = set(r.header.info.get("reg_for_uids", [])) | {r.header.for_uid}
        targets = [by_for[f] for f in sorted(fors) if f in by_for]
        if not targets:
            rejections.append(
                Rejection(r.path, "REG does not involve the frame of reference of any course's CT", "REG")
            )
            continue
        course = targets[0]
        course.reg_uids.append(r.header.sop_instance_uid)
        course.files.append(r)
        for uid, files in series.items():
            if uid not in used_series and files[0].header.kind != "CT" and files[0].header.for_uid in fors:
                course.other_series_uids.append(uid)
                course.files += files
                used_series.add(uid)


def _attach_same_frame(courses, series, used_series) -> None:
    """MR and PET series in a course's planning-CT frame of reference (a PET/CT, an MR on the
    planning couch) join that course without a REG."""
    by_for = {c.for_uid: c for c in courses}
    for uid, files in series.items():
        head = files[0].header
        if uid in used_series or head.kind == "CT" or head.for_uid not in by_for:
            continue
        course = by_for[head.for_uid]
        course.other_series_uids.append(uid)
        course.files += files
        used_series.add(uid)
        if head.patient_id != course.patient_id:
            course.notes.append(f"{head.kind} series {uid} shares the CT's frame of reference but not its PatientID")


#: the header fields, besides the object's own UIDs, through which the rules above join files, and
#: the kind of UID each holds
LINK_INFO_FIELDS = {
    "ref_series_uids": "series",
    "ref_for_uids": "for",
    "roi_for_uids": "for",
    "ref_study_uids": "study",
    "ref_struct_uids": "sop",
    "ref_plan_uids": "sop",
    "reg_for_uids": "for",
}


def link_tokens(header) -> set[str]:
    """Every UID through which linking can join this object to another (its SOP Instance, series,
    study and frame of reference UIDs, and the UIDs it references). Objects that share no token,
    directly or through others, link independently: :mod:`rt_resources.ingest.link_state` relinks
    only the part of the drop a change reaches this way.

    A missing (empty) UID joins too (the rules compare values, and "" equals ""): it becomes the
    token ``empty:<kind>``, shared by every object missing one of that kind."""
    pairs = [
        (header.sop_instance_uid, "sop"),
        (header.series_uid, "series"),
        (header.study_uid, "study"),
        (header.for_uid, "for"),
    ]
    for name, kind in LINK_INFO_FIELDS.items():
        pairs += [(uid, kind) for uid in header.info.get(name) or []]
    return {uid if uid else f"empty:{kind}" for uid, kind in pairs}
