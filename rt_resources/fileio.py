"""Atomic writes under the data root: write a temporary file in the same folder, then rename.

A reader never sees a half-written output, and a crashed step leaves no file that looks
finished. Output paths are built only from course keys and fixed names, never from tag
values (see :func:`course_dir`).
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")
_COURSE_KEY = re.compile(r"^c-[0-9a-f]{12}$")


def is_course_key(key: str) -> bool:
    """``c-`` and 12 hex digits (rt_resources.ingest.course_keys)."""
    return bool(_COURSE_KEY.match(key))


def course_dir(data_root: Path, key: str) -> Path:
    """``<data_root>/courses/<key>``, refusing anything that is not a course key."""
    if not is_course_key(key):
        raise ValueError(f"{key!r} is not a course key (expected c- and 12 hex digits)")
    return Path(data_root) / "courses" / key


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``target`` (same suffixes); rename it over ``target`` on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    tmp = target.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(target: Path, writer: Callable[[Path], Any]) -> Path:
    """Call ``writer(tmp_path)`` and move the result to ``target`` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_json_atomic(target: Path, payload: Any) -> Path:
    """Write ``payload`` as indented JSON, atomically."""
    text = json.dumps(payload, indent=2, sort_keys=False, default=str)
    return write_atomic(target, lambda tmp: tmp.write_text(text + "\n"))


def write_parquet_atomic(target: Path, frame, mode: int | None = None) -> Path:
    """Write a pandas DataFrame as parquet (pyarrow), atomically; ``mode`` (e.g. 0o600) is set
    before the file gets its name, so it is never readable by others under that name."""

    def write(tmp: Path) -> None:
        frame.to_parquet(tmp, index=False)
        if mode is not None:
            os.chmod(tmp, mode)

    return write_atomic(target, write)


def replace_dir_atomic(target: Path, writer: Callable[[Path], T]) -> T:
    """Fill a fresh temporary folder with ``writer(tmp_dir)``, then swap it in for ``target``;
    return what ``writer`` returned.

    Readers see the old folder or the new one, never a mix; files of an earlier version
    that the new one lacks (a renamed ROI) do not linger.
    """
    import shutil

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    tmp.mkdir()
    try:
        result = writer(tmp)
        if target.exists():
            os.replace(target, old)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return result


def remove_dirs_except(parent: Path, pattern: str, keep: set[str]) -> None:
    """Remove the folders of ``parent`` matching ``pattern`` whose name is not in ``keep``: a
    series no longer in a course (or unusable now) leaves no stale output folder behind."""
    import shutil

    parent = Path(parent)
    for stale in parent.glob(pattern) if parent.is_dir() else []:
        if stale.is_dir() and stale.name not in keep:
            shutil.rmtree(stale)
