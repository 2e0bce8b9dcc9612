"""What every QC check returns, and how verdicts become the course's ``qc.json``.

Each check (in :mod:`rt_resources.qc.geometry`, :mod:`~rt_resources.qc.dose`,
:mod:`~rt_resources.qc.structures`, :mod:`~rt_resources.qc.segmentation` and
:mod:`~rt_resources.qc.radiomics`) takes paths, a manifest dict or a table (never a Dagster
context) and returns one :class:`QcResult`: which asset it belongs to, whether it passed, how
bad a failure is (``ERROR``: a downstream number would be wrong; ``WARN``: look at it), one or
two lines a physicist can act on, and JSON-serializable metadata (per-ROI tables as lists of
dicts). :func:`run_guarded` turns a check that raises into a failed ``ERROR`` result (a check
that could not run never passes) and :func:`qc_json` is the ``courses/<key>/qc.json`` document.
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

QC_SCHEMA = "rtpipeline.qc/1"
ERROR = "ERROR"
WARN = "WARN"
SEVERITIES = (ERROR, WARN)


@dataclass(frozen=True)
class QcResult:
    """One check's verdict on one course."""

    name: str  #: stable id, e.g. "frame_of_reference"
    asset: str  #: the asset it belongs to: "ct_image", "dose_grid", "structure_masks", ...
    passed: bool
    severity: str  #: ERROR (blocking: a downstream number would be wrong) or WARN
    description: str  #: one or two lines a physicist can act on
    metadata: dict = field(default_factory=dict)  #: JSON-serializable

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")
        object.__setattr__(self, "passed", bool(self.passed))
        object.__setattr__(self, "metadata", _jsonable(dict(self.metadata)))


def to_dict(result: QcResult) -> dict:
    """The result as a plain dict (as in qc.json)."""
    return asdict(result)


def from_dict(data: dict) -> QcResult:
    """A result from :func:`to_dict`'s dict (unknown keys are ignored)."""
    return QcResult(
        name=str(data["name"]),
        asset=str(data["asset"]),
        passed=bool(data["passed"]),
        severity=str(data["severity"]),
        description=str(data.get("description", "")),
        metadata=dict(data.get("metadata") or {}),
    )


def qc_json(results: list[QcResult], course_key: str | None = None) -> dict:
    """The ``qc.json`` document: schema, overall status, counts by severity, every result.

    ``status`` is FAIL when an ERROR check failed, WARN when only WARN checks failed, else PASS.
    """
    counts = {
        "total": len(results),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "passed_by_severity": {s: sum(r.passed and r.severity == s for r in results) for s in SEVERITIES},
        "failed_by_severity": {s: sum(not r.passed and r.severity == s for r in results) for s in SEVERITIES},
    }
    if counts["failed_by_severity"][ERROR]:
        status = "FAIL"
    elif counts["failed_by_severity"][WARN]:
        status = "WARN"
    else:
        status = "PASS"
    doc: dict[str, Any] = {"schema": QC_SCHEMA}
    if course_key is not None:
        doc["course_key"] = course_key
    doc.update(status=status, counts=counts, results=[to_dict(r) for r in results])
    return doc


def run_guarded(fn: Callable[..., QcResult], *args, name: str, asset: str, **kwargs) -> QcResult:
    """``fn(*args, **kwargs)``; any exception becomes a failed ERROR result naming it.

    The result carries ``name`` and ``asset`` (so it always matches the caller's check spec);
    a check that returns something other than a :class:`QcResult` fails too.
    """
    try:
        result = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 -- a QC check that errors is a failed check, never a pass
        tb = traceback.extract_tb(exc.__traceback__)
        where = f"{Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        return QcResult(
            name,
            asset,
            False,
            ERROR,
            f"check {name} could not run: {type(exc).__name__}: {exc}",
            {"exception": type(exc).__name__, "message": str(exc)[:2000], "where": where},
        )
    if not isinstance(result, QcResult):
        return QcResult(name, asset, False, ERROR, f"check {name} returned {type(result).__name__}, not a QcResult", {})
    if (result.name, result.asset) != (name, asset):
        result = replace(result, name=name, asset=asset)
    return result


def join_lines(lines: list[str], n: int = 5) -> str:
    """The first ``n`` of ``lines`` joined with "; ", and how many more there are."""
    more = f"; and {len(lines) - n} more" if len(lines) > n else ""
    return "; ".join(lines[:n]) + more


def _jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, tuples, sets and paths made JSON types; NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if value is None or isinstance(value, str):
        return value
    return str(value)
