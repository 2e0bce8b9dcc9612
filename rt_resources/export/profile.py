"""De-identify one DICOM dataset: PS3.15 Annex E, Basic Application Level Confidentiality Profile.

Built on dicom-anonymizer (KitwareMedical, import name ``dicomanonymizer``): it ships Table E.1-1
of the standard itself as tag lists with the standard's action codes (D, Z, X, U, Z/D, X/Z, X/D,
X/Z/D, X/Z/U*), one list per edition; we use the newest it ships, ``dicomfields_2026c``. We chose it
over dicognito (a curated list of attributes, not the standard's table) and deid (recipes one writes
oneself) because what it removes is the standard's own table, edition by edition, and a reviewer
can check the export against the standard rather than against our list.

The table is applied with the library's engine (``anonymize_dataset``) and its VR-aware value
functions, with these changes, each recorded in the export report:

* **Every sequence level.** The library applies individual-tag rules to the top-level dataset only;
  Table E.1-1 applies to an attribute wherever it occurs (ROI Description in Structure Set ROI
  Sequence, Beam Description, Referenced SOP Instance UID in every reference sequence). The engine
  is run on the dataset, then on every item of every sequence that remains, top down.
* **U (and UIDs under D and X/.../D)**: a deterministic HMAC UID (:mod:`.uids`) instead of the
  library's random, process-global one, so references between the objects of a course resolve.
* **Sequences.** The library empties or dummies every attribute inside a sequence (a Referenced
  Image Sequence would keep its items with empty UIDs and class UIDs). Here: X/Z/U* keeps the
  sequence and replaces the instance UIDs it contains (the U* choice); Z and X/Z leave a sequence
  with zero items; X/D and X/Z/D remove it (Type 3 in the CT, MR and RT IODs exported); D replaces
  every contained value with a dummy.
* **Kept against the profile** (:data:`KEPT_AGAINST_PROFILE`): ROI Name.
* **Beyond the profile**: Content Description emptied; PatientID and PatientName set to the course
  key; Structure Set Label and RT Plan Label (Type 1, D) set to neutral labels; the File Meta
  Information rebuilt (no source AE titles or implementation identifiers).

Everything else the pipeline reads (pixel data, geometry, rescale, contours, ROI numbers, dose
scaling and type, fraction group and beam data, the Dose Reference Sequence, registration
matrices) is not in Table E.1-1 and passes unchanged; the UIDs among it (Dose Reference UID,
Referenced SOP Instance UID, frames of reference) are U and replaced consistently. The report
(:mod:`.report`) lists what the profile does to each of them.
"""

from __future__ import annotations

import functools
from importlib import metadata

from dicomanonymizer import simpledicomanonymizer as lib
from pydicom.datadict import keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence

from rt_resources.export.uids import UidMap

TABLE = "dicomfields_2026c"
LIBRARY = "dicom-anonymizer"
PROFILE = "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile"
PROFILE_CODE = {"code_value": "113100", "scheme": "DCM", "meaning": "Basic Application Confidentiality Profile"}
#: attributes the profile removes or blanks that the pipeline needs: kept as they are
KEPT_AGAINST_PROFILE = {
    (0x3006, 0x0026): (
        "ROI names are clinical structure names (PTV, Heart, Lung_L), not facts about the patient; the DVH and "
        "radiomics tables and a re-run of this pipeline are keyed by them. A patient identifier typed into an ROI "
        "name is caught by the residual-identifier check of the export."
    ),
}
#: free text that may hold names and that Table E.1-1 does not list: cleared too
EXTRA_RULES = {
    (0x0070, 0x0081): ("Z", "free text (Content Description); Type 2 in the Content Identification Module"),
}
STRUCTURE_SET_LABEL = "RTSTRUCT"
METHOD = [
    "DICOM PS3.15 E.1 Basic Application Level Confidentiality",
    "Table E.1-1 from dicom-anonymizer dicomfields_2026c",
    "Table applied at every sequence level",
    "Private attributes removed",
    "UIDs replaced: 2.25 from HMAC-SHA256 of the original UID",
    "Kept against the profile: ROI Name (3006,0026)",
    "PatientID and PatientName set to a pseudonymous key",
]

_CODES = {
    lib.replace: "D",
    lib.empty: "Z",
    lib.delete: "X",
    lib.replace_UID: "U",
    lib.empty_or_replace: "Z/D",
    lib.delete_or_empty: "X/Z",
    lib.delete_or_replace: "X/D",
    lib.delete_or_empty_or_replace: "X/Z/D",
    lib.delete_or_empty_or_replace_UID: "X/Z/U*",
}
_LIBRARY_ACTION = {code: fn for fn, code in _CODES.items()}
#: codes under which the library would put a (new) value in a UI element: ours is the HMAC UID
_REPLACING = {"D", "U", "Z/D", "X/D", "X/Z/D", "X/Z/U*"}


def library_version() -> str:
    try:
        return metadata.version(LIBRARY)
    except metadata.PackageNotFoundError:
        return "missing"


@functools.cache
def profile_table() -> dict[tuple[int, ...], str]:
    """Table E.1-1 as the library ships it: tag (or repeating-group mask) -> action code."""
    table = {}
    for tag, fn in lib.initialize_actions(TABLE).items():
        if fn not in _CODES:
            raise RuntimeError(f"{LIBRARY} {library_version()}: unknown action {fn!r} for {tag}")
        table[tuple(tag)] = _CODES[fn]
    return table


def tag_text(tag: tuple[int, ...]) -> str:
    return f"({tag[0]:04X},{tag[1]:04X})"


def keyword(tag: tuple[int, ...]) -> str:
    return keyword_for_tag((tag[0] << 16) | tag[1]) if len(tag) == 2 else ""


def as_tuple(name: str) -> tuple[int, int]:
    tag = tag_for_keyword(name)
    return (tag >> 16, tag & 0xFFFF)


def burned_in(ds: Dataset) -> bool:
    """Whether the object says its pixels carry burned-in annotation (which the profile cannot clean)."""
    return str(ds.get("BurnedInAnnotation", "")).strip().upper() == "YES"


class Deidentifier:
    """Applies the profile (see the module docstring) with one :class:`UidMap` for a whole course."""

    def __init__(self, uids: UidMap) -> None:
        self.uids = uids
        self.rules = {tag: self._rule(code) for tag, code in profile_table().items() if len(tag) == 2}
        self.rules.update({tag: self._rule(code) for tag, (code, _) in EXTRA_RULES.items()})
        self.rules.update({tag: lib.keep for tag in KEPT_AGAINST_PROFILE})
        self.group_rules = {tag: self._rule(code) for tag, code in profile_table().items() if len(tag) == 4}

    def apply(self, ds: Dataset, course_key: str, plan_label: str = "PLAN1") -> None:
        """De-identify ``ds`` in place and mark it as de-identified."""
        self._level(ds, top=True)
        self._finish(ds, course_key, plan_label)

    # -- the table, level by level -----------------------------------------------------------
    def _level(self, ds: Dataset, top: bool) -> None:
        here = self._present(ds)
        if top:
            meta = getattr(ds, "file_meta", None)
            if meta is not None:
                here.update(self._present(meta))
            # overlay and curve groups are top-level attributes (PS3.3 C.9, C.10); the library walks them
            if any(t.group & 0xFF00 in (0x5000, 0x6000) for t in ds.keys()):
                here.update(self.group_rules)
        lib.anonymize_dataset(ds, None, delete_private_tags=top, base_rules_gen=lambda: here)
        for tag in list(ds.keys()):
            vr = ds.get_item(tag).VR or ds[tag].VR  # raw elements are not decoded unless implicit VR
            if vr == "SQ":
                for item in ds[tag].value or []:
                    self._level(item, top=False)

    def _present(self, ds: Dataset) -> dict:
        """The rules of the attributes ``ds`` holds (the engine then visits only those)."""
        keys = ((t.group, t.element) for t in ds.keys())
        return {key: self.rules[key] for key in keys if key in self.rules}

    def _rule(self, code: str):
        library_action = _LIBRARY_ACTION[code]

        def action(dataset: Dataset, tag) -> None:
            elem = dataset.get(tag)
            if elem is None:
                return
            if code == "X":
                library_action(dataset, tag)
            elif elem.VR == "SQ":
                self._sequence(dataset, elem, code)
            elif elem.VR == "UI" and code in _REPLACING:
                self.uids.element(elem)
            else:
                library_action(dataset, tag)

        return action

    def _sequence(self, dataset: Dataset, elem, code: str) -> None:
        if code in ("X/Z/U*", "U"):
            return  # kept; the UIDs it contains are replaced when the walk reaches its items
        if code in ("Z", "X/Z"):
            elem.value = Sequence()
        elif code in ("X/D", "X/Z/D"):
            del dataset[elem.tag]
        else:  # D, Z/D: a dummy for every contained value
            for item in elem.value or []:
                self._dummy(item)

    def _dummy(self, item: Dataset) -> None:
        for tag in list(item.keys()):
            elem = item[tag]
            if elem.VR == "SQ":
                for sub in elem.value or []:
                    self._dummy(sub)
            elif elem.VR == "UI":
                self.uids.element(elem)
            else:
                try:
                    lib.replace_element(elem)
                except NotImplementedError:  # a VR the library has no dummy for (OW, AT, ...)
                    del item[tag]

    # -- what the export sets ------------------------------------------------------------------
    def _finish(self, ds: Dataset, course_key: str, plan_label: str) -> None:
        ds.PatientID = course_key
        ds.PatientName = course_key
        modality = str(ds.get("Modality", "")).upper()
        if "StructureSetLabel" in ds or modality == "RTSTRUCT":
            ds.StructureSetLabel = STRUCTURE_SET_LABEL
        if "RTPlanLabel" in ds or modality == "RTPLAN":
            ds.RTPlanLabel = plan_label
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = METHOD
        code = Dataset()
        code.CodeValue = PROFILE_CODE["code_value"]
        code.CodingSchemeDesignator = PROFILE_CODE["scheme"]
        code.CodeMeaning = PROFILE_CODE["meaning"]
        ds.DeidentificationMethodCodeSequence = Sequence([code])
        old = getattr(ds, "file_meta", None)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        syntax = old.get("TransferSyntaxUID") if old is not None else None
        if syntax:
            meta.TransferSyntaxUID = syntax
        ds.file_meta = meta
