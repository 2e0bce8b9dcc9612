"""Keep identifiers out of what many people see: Dagster's storage and UI, logs, research tables.

Radiotherapy exports name folders after patients (``HNSCC-01-0001/...``, ``DOE^JOHN/...``) and
planners write names into free-text labels. The run history, the UI and the research tables are
seen by more people than the data, so nothing written there carries a PatientID, a name, a birth
date, an accession number, a free-text label, or a path component below the drop root. Files
appear there by SOP Instance UID or by a *file id*: ``f-`` + 12 hex digits of
HMAC-SHA256(site secret, drop-relative path) — stable, and without the secret it reveals nothing
(a plain hash of a path holding a name could be guessed). ``cohort/ingest_report.parquet`` and
``rtpipeline audit``, read locally by whoever may read the data root, map file ids back to paths.

:class:`Scrubber` rewrites any text on its way to Dagster: absolute paths under the drop root,
the course's drop-relative paths and their file names become file ids; the course's PatientIDs,
names (and their parts) become ``[redacted]``. Code writes file ids and UIDs in the first place;
the scrubber catches what engines and libraries put in their messages (a CT file named in a
geometry error, a path in an exception).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

REDACTED = "[redacted]"
#: name parts shorter than this are not scrubbed on their own (they would match ordinary words)
MIN_PART = 3


def file_id(secret: bytes, rel_path: str) -> str:
    """The file id of a drop-relative path: ``f-`` + 12 hex digits of HMAC-SHA256(secret, path)."""
    return "f-" + hmac.new(secret, Path(rel_path).as_posix().encode(), hashlib.sha256).hexdigest()[:12]


def name_parts(value: str) -> list[str]:
    """A PatientName or ID and its parts (DICOM PN components split on ^ = and spaces), longest first."""
    value = (value or "").strip()
    if not value:
        return []
    parts = {value, value.replace("^", " ").strip()}
    parts |= {p for p in re.split(r"[\^=\s,]+", value) if len(p) >= MIN_PART}
    return sorted((p for p in parts if p), key=len, reverse=True)


class Scrubber:
    """Rewrites text (and nested metadata) so it holds no path below the drop root and none of the
    given identifiers (see the module docstring)."""

    def __init__(
        self,
        secret: bytes,
        drop_root: Path | str | None = None,
        rel_paths: Iterable[str] = (),
        identifiers: Iterable[str] = (),
    ) -> None:
        self.secret = secret
        self.drop_root = str(Path(drop_root).resolve()) if drop_root else ""
        self._paths: dict[str, str] = {}
        for rel in rel_paths:
            self._paths[Path(rel).as_posix()] = file_id(secret, rel)
        names = {n for ident in identifiers for n in name_parts(ident)}
        self._names = sorted(names, key=len, reverse=True)
        self._name_re = re.compile("|".join(re.escape(n) for n in self._names), re.IGNORECASE) if self._names else None
        # longest first, so a path is replaced before its file name alone
        basenames: dict[str, str] = {}
        for rel, fid in self._paths.items():
            name = Path(rel).name
            if re.search(r"[.\d]", name) and len(name) >= 5:  # not a bare word such as RTDOSE
                basenames.setdefault(name, fid)
        literal = {**{rel: fid for rel, fid in self._paths.items()}, **basenames}
        self._literals = sorted(literal.items(), key=lambda kv: len(kv[0]), reverse=True)
        self._abs_re = re.compile(re.escape(self.drop_root) + r"(/[^\s'\"(),;:\]}]*)?") if self.drop_root else None

    def path(self, path: Path | str) -> str:
        """The file id of a path (absolute under the drop root, or drop-relative)."""
        text = str(path)
        if self.drop_root and text.startswith(self.drop_root + "/"):
            text = text[len(self.drop_root) + 1 :]
        return file_id(self.secret, text)

    def text(self, value: str) -> str:
        """``value`` with paths below the drop root as file ids and identifiers as [redacted]."""
        if not value:
            return value
        out = value
        if self._abs_re is not None:
            out = self._abs_re.sub(lambda m: f"<drop>/{self.path(m.group(0))}" if m.group(1) else "<drop>", out)
        for literal, fid in self._literals:
            if literal in out:
                out = out.replace(literal, fid)
        if self._name_re is not None:
            out = self._name_re.sub(REDACTED, out)
        return out

    def value(self, obj: Any) -> Any:
        """Scrub every string inside ``obj`` (dicts, lists, tuples; keys too)."""
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, Mapping):
            return {self.value(k): self.value(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return type(obj)(self.value(v) for v in obj)
        return obj


def identifiers_from_headers(drop_root: Path, rel_paths: Iterable[str]) -> set[str]:
    """PatientID and PatientName read from the files' headers themselves: for a machine whose drop
    index does not know these files (a worker with its own state folder, see
    :mod:`rt_resources.state`). A course is one patient's, so one header per folder is read (every
    folder, so a course spread over folders still gives every spelling of the name)."""
    import pydicom

    found: set[str] = set()
    seen_dirs: set[str] = set()
    for rel in rel_paths:
        folder = str(Path(rel).parent)
        if folder in seen_dirs:
            continue
        seen_dirs.add(folder)
        try:
            ds = pydicom.dcmread(
                Path(drop_root) / rel, stop_before_pixels=True, specific_tags=["PatientID", "PatientName"]
            )
        except Exception:  # unreadable here: the step that reads it reports it
            continue
        found |= {str(v) for v in (ds.get("PatientID", ""), ds.get("PatientName", "")) if v and str(v)}
    return found
