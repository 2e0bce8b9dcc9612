"""File names for ROI names: safe on every file system, unique, traceable to the exact name."""

from __future__ import annotations

import re

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def sanitize_roi_names(names: list[str]) -> dict[str, str]:
    """Map each ROI name to a unique file stem (letters, digits, ``._+-``; others become ``_``).

    The exact name stays in tables and metadata; only file names use the stem. Names that
    collide after sanitizing (``GTV 1`` and ``GTV/1``) get ``_2``, ``_3`` ... in order.
    """
    stems: dict[str, str] = {}
    used: set[str] = set()
    for name in names:
        stem = _UNSAFE.sub("_", name).strip("._") or "roi"
        candidate, n = stem, 1
        while candidate.lower() in used:
            n += 1
            candidate = f"{stem}_{n}"
        used.add(candidate.lower())
        stems[name] = candidate
    return stems
