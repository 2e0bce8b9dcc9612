"""Deterministic replacement UIDs for an export (PS3.15 Annex E, action U).

The Basic Profile replaces every instance, series, study and frame-of-reference UID "with a
non-zero length UID that is internally consistent within a set of Instances", so that references
between the objects of a course still resolve. dicom-anonymizer's own replacement (``get_UID``)
draws random UIDs and keeps the mapping in a process-global dictionary: a second export, or another
process, gives the same object another UID, and nothing but that dictionary ties an RTDOSE to its
RTPLAN. Here the new UID is a function of the old one and a secret:

    new UID = "2.25." + int(first 16 bytes of HMAC-SHA256(secret, old UID))

a valid UID under the UUID-derived root 2.25 (at most 44 characters), the same in every run, every
process and every course (an MR shared by two courses keeps one UID), and without the secret it
cannot be traced back to the source UID.

UIDs under the DICOM root ``1.2.840.10008`` (SOP classes, transfer syntaxes, coding schemes) are
constants of the standard, not identifiers of anything the patient had, and are never replaced.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from pydicom.multival import MultiValue

UID_ROOT = "2.25."
STANDARD_ROOT = "1.2.840.10008."
UID_METHOD = 'new UID = "2.25." + decimal integer of the first 16 bytes of HMAC-SHA256(export secret, original UID)'
#: a UID inside free text (a QC message, a table cell): 5 or more numeric components, first 0-2
_UID_IN_TEXT = re.compile(r"(?<![\w.])[0-2](?:\.(?:0|[1-9][0-9]*)){4,}(?![\w.])")


def new_uid(secret: bytes, old_uid: str) -> str:
    """The replacement of ``old_uid`` under ``secret`` (see the module docstring)."""
    digest = hmac.new(secret, old_uid.encode("ascii", "replace"), hashlib.sha256).digest()
    return UID_ROOT + str(int.from_bytes(digest[:16], "big"))


class UidMap:
    """Old UID -> new UID for one export; remembers what it replaced (to prove none is left)."""

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the export secret must not be empty")
        self.secret = bytes(secret)
        self.replaced: dict[str, str] = {}

    def __call__(self, uid: str) -> str:
        uid = str(uid).strip().rstrip("\x00")
        if not uid or uid.startswith(STANDARD_ROOT):
            return uid
        new = self.replaced.get(uid)
        if new is None:
            new = self.replaced[uid] = new_uid(self.secret, uid)
        return new

    def element(self, elem) -> None:
        """Replace the UID(s) of a UI data element in place (single or multi-valued)."""
        if isinstance(elem.value, MultiValue | list | tuple):
            elem.value = [self(v) for v in elem.value]
        elif elem.value:
            elem.value = self(elem.value)

    def text(self, text: str) -> str:
        """``text`` with every UID in it replaced (standard UIDs kept)."""
        return _UID_IN_TEXT.sub(lambda m: self(m.group(0)), text)
