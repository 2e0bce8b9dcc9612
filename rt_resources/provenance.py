"""What produced a number: tool versions and input digests for lineage metadata."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterable
from importlib import metadata

_TOOLS = ("rtpipeline", "dagster", "pydicom", "SimpleITK", "numpy", "pandas", "pyarrow")


def tool_versions(extra: Iterable[str] = ()) -> dict[str, str]:
    """Installed versions of the tools that shape outputs (``missing`` when not installed)."""
    versions = {"python": platform.python_version()}
    for name in (*_TOOLS, *extra):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "missing"
    return versions


def digest_of(digests: Iterable[str]) -> str:
    """One sha256 over a set of sha256 digests (order-independent)."""
    return hashlib.sha256("\n".join(sorted(digests)).encode()).hexdigest()


def sha256_file(path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
