"""Is a received instance decodable? Its structure checked without converting values or pixels."""

from __future__ import annotations

from io import BytesIO

import pydicom
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset


class UndecodableError(ValueError):
    """A C-STORE data set that pydicom cannot decode."""


def decode_instance(data: bytes) -> tuple[str, str]:
    """Decode the structure of a received instance (Part 10 bytes) and return its
    ``(SOP Class UID, SOP Instance UID)`` ("" when missing).

    Every top-level element must be read and the last one must end exactly at the end of the data
    (pydicom itself stops quietly at a cut or a bad length), and every sequence, nested ones
    included, must parse into items. Values are not converted (a 50 MB structure set would take
    seconds), nor pixels decoded. Raises :class:`UndecodableError` saying what is wrong."""
    try:
        ds = pydicom.dcmread(BytesIO(data))
        tags = list(ds.keys())
        if not tags:
            raise UndecodableError("no data element after the file meta information")
        last = ds.get_item(tags[-1])
        start, length = getattr(last, "value_tell", None), getattr(last, "length", None)
        if start is not None and length not in (None, _UNDEFINED_LENGTH) and start + length != len(data):
            raise UndecodableError(f"element {tags[-1]} ends at byte {start + length}, the data set has {len(data)}")
        _parse_sequences(ds)
        return str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or "")
    except UndecodableError:
        raise
    except Exception as exc:  # pydicom raises many types on corrupt input
        raise UndecodableError(f"{type(exc).__name__}: {exc}") from exc


_UNDEFINED_LENGTH = 0xFFFFFFFF


def _parse_sequences(ds: Dataset) -> None:
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        vr = getattr(raw, "VR", None)
        if vr is None:  # implicit VR: the dictionary says
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                continue
        if vr == "SQ":
            for item in ds[tag].value:
                _parse_sequences(item)
