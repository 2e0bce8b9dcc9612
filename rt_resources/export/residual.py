"""The last gate of an export: no identifier of the patient left in what leaves the site.

The profile removes the attributes the standard lists; it cannot know that a planner typed the
patient's name into an ROI name, a beam name or a label the standard lets through. Before an
export is swapped in, every text value of every written object (pixel data aside: random bytes
would match short strings) and every research table is searched for the identifiers the source
objects carried:

* the PatientID, Other Patient IDs, and the full patient names (``DOE^JOHN``, ``JOHN DOE``):
  a hit refuses the object (or table), naming the attribute, never the value;
* each part of a name (3 characters or more) on its own: a hit is a warning, since a family name
  can be an ordinary word ("synthetic" in a model name), for a person to look at.

Matches are case-insensitive and whole-word (not inside a longer run of letters or digits).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

MIN_LENGTH = 3
_TEXT_VRS = {"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"}
_ID_KEYWORDS = ("PatientID", "OtherPatientIDs")
_NAME_KEYWORDS = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName")
#: placeholders of already de-identified sources (and the library's own dummy): identify no one
_PLACEHOLDERS = {"anonymized", "anonymous", "unknown", "none"}


@dataclass
class Identifiers:
    """What identified the patient in the source objects (kept in memory only, never written)."""

    full: set[str] = field(default_factory=set)  #: IDs and whole names: a hit refuses
    parts: set[str] = field(default_factory=set)  #: name parts: a hit warns

    def add_source(self, ds: Dataset) -> None:
        """Collect the identifiers of a source object (before it is de-identified)."""
        for kw in _ID_KEYWORDS:
            for value in _values(ds.get(kw)):
                if len(value) >= MIN_LENGTH:
                    self.full.add(value)
        for kw in _NAME_KEYWORDS:
            for value in _values(ds.get(kw)):
                parts = [p for p in re.split(r"[\^=\s,]+", value) if p]
                wholes = {value, " ".join(parts), " ".join(reversed(parts[:2]))} if len(parts) > 1 else {value}
                self.full.update(w for w in wholes if len(w) >= MIN_LENGTH)
                self.parts.update(p for p in parts if len(p) >= MIN_LENGTH)
        self.parts -= self.full
        self.full = {w for w in self.full if w.lower() not in _PLACEHOLDERS}
        self.parts = {w for w in self.parts if w.lower() not in _PLACEHOLDERS}

    def update(self, other: Identifiers) -> None:
        self.full |= other.full
        self.parts |= other.parts
        self.parts -= self.full

    def _pattern(self, words: Iterable[str]) -> re.Pattern | None:
        words = sorted(set(words), key=len, reverse=True)
        if not words:
            return None
        body = "|".join(re.escape(w) for w in words)
        return re.compile(rf"(?<![0-9A-Za-z])(?:{body})(?![0-9A-Za-z])", re.IGNORECASE)

    def search(self, texts: Iterable[tuple[str, str]]) -> tuple[list[str], list[str]]:
        """``(where, text)`` pairs -> (places with a full identifier, places with a name part)."""
        full, parts = self._pattern(self.full), self._pattern(self.parts)
        hard, soft = [], []
        for where, text in texts:
            if full is not None and full.search(text):
                hard.append(where)
            elif parts is not None and parts.search(text):
                soft.append(where)
        return sorted(set(hard)), sorted(set(soft))


def dataset_texts(ds: Dataset) -> list[tuple[str, str]]:
    """(keyword, value) of every text element of ``ds``, sequences included (others are not decoded)."""
    out: list[tuple[str, str]] = []
    for tag in ds.keys():
        vr = ds.get_item(tag).VR
        if vr is None:
            vr = ds[tag].VR
        if vr == "SQ":
            for item in ds[tag].value or []:
                out += dataset_texts(item)
        elif vr in _TEXT_VRS:
            elem = ds[tag]
            text = "\\".join(_values(elem.value))
            if text:
                out.append((elem.keyword or str(elem.tag), text))
    return out


def _values(value) -> list[str]:
    """An element's value(s) as stripped strings (PersonName included)."""
    if value is None:
        return []
    items = value if isinstance(value, MultiValue | list | tuple) else [value]
    return [str(v).strip() for v in items if str(v).strip()]
