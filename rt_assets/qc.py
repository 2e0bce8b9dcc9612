"""Quality checks as Dagster asset checks, evaluated in the step of the asset they check.

The checks themselves are plain functions in the modules of :mod:`rt_resources.qc`. Here each course
asset declares its checks (``check_specs(asset)``) and turns the engine's verdicts into
``AssetCheckResult`` events (``check_results``), so they appear on the asset in the UI, with
severity and metadata. Checks that can catch a wrong downstream number are *blocking*: when
one fails with ERROR severity, the asset's step fails after recording its output and the
course's downstream steps in that run do not run; the other courses' runs are not affected.

Running the checks inside the asset's step (rather than as separate check steps) costs no
extra process per check under the multiprocess executor. Each asset also writes its verdicts
to ``courses/<key>/qc/<asset>.json`` and the merged ``courses/<key>/qc.json`` (without a lock, as
the course folder may be on NFS: see :func:`record`); ``cohort_qc`` stacks the courses' qc.json.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, MetadataValue

from rt_resources.fileio import write_json_atomic
from rt_resources.qc.results import ERROR, QcResult, from_dict, qc_json, run_guarded, to_dict

log = logging.getLogger("rtpipeline.qc")

QC_DIR = "qc"
QC_FILE = "qc.json"

#: asset -> its checks: (name, blocking, what it verifies)
CHECKS: dict[str, list[tuple[str, bool, str]]] = {
    "ct_image": [
        ("frame_of_reference", True, "CT slices, RTSTRUCT and RTDOSE share the planning CT's frame of reference"),
        ("ct_geometry", True, "uniform slice spacing, one orientation, no missing slices, constant matrix"),
    ],
    "dose_grid": [
        ("dose_units", True, "dose in Gy (not RELATIVE), dose type understood, prescription found"),
    ],
    "structure_masks": [
        ("structure_boundary", False, "no ROI touches or is cut by the CT's boundary"),
        ("mask_vs_contour_volume", False, "mask volume within 2% of the contour (polygon) volume per ROI"),
    ],
    "dvh": [
        ("dose_coverage", True, "the dose grid covers every ROI (uncovered fraction per ROI)"),
        ("dvh_sanity", True, "volume > 0, D2 >= D50 >= D98, min <= mean <= max"),
    ],
    "ct_crop": [
        ("crop_boundary", False, "no ROI is cut by an anatomical crop's bounds"),
    ],
    "totalseg_masks": [
        ("autoseg_completeness", False, "expected organs present for the body regions the vertebrae show"),
    ],
    "radiomics": [
        ("radiomics_nan", False, "fraction of NaN/inf feature values per ROI"),
    ],
    "pet_images": [
        ("pet_suv", False, "every PET series is in SUVbw (QIBA pseudo-code), or the reason it is not"),
    ],
    "contour_agreement": [
        ("agreement_dice", False, "every organ's automatic contour reaches the minimum Dice against the manual one"),
    ],
}


def check_specs(asset: str) -> list[AssetCheckSpec]:
    """The check specs of ``asset`` (for ``@asset(check_specs=...)``)."""
    return [
        AssetCheckSpec(name, asset=asset, blocking=blocking, description=description)
        for name, blocking, description in CHECKS[asset]
    ]


def evaluate(asset: str, checks: dict[str, Callable[[], QcResult]]) -> list[QcResult]:
    """Run each of ``asset``'s checks (``name -> thunk``) guarded: an exception is a failed check."""
    missing = [name for name, _, _ in CHECKS[asset] if name not in checks]
    if missing:
        raise ValueError(f"{asset}: no function for checks {missing}")
    return [run_guarded(checks[name], name=name, asset=asset) for name, _, _ in CHECKS[asset]]


def not_evaluated(asset: str, reason: str) -> list[QcResult]:
    """Failed WARN results for checks that could not be evaluated (e.g. no dose: no DVH)."""
    return [
        QcResult(name, asset, False, "WARN", f"not evaluated: {reason}", {"not_evaluated": True})
        for name, _, _ in CHECKS[asset]
    ]


def check_results(context: AssetExecutionContext, course_dir: Path, results: list[QcResult]) -> list[AssetCheckResult]:
    """Record ``results`` (qc/<asset>.json, qc.json) and return them as Dagster check results."""
    from dataclasses import replace

    from rt_assets.privacy import current

    asset = context.asset_key.to_user_string()
    scrubber = current()
    if scrubber is not None:  # the course's files by id, no identifier: in qc.json as in Dagster
        results = [
            replace(r, description=scrubber.text(r.description), metadata=scrubber.value(r.metadata)) for r in results
        ]
    record(course_dir, asset, results)
    out = []
    for r in results:
        if not r.passed:
            context.log.warning(f"QC {asset}/{r.name} ({r.severity}) failed: {r.description}")
        out.append(
            AssetCheckResult(
                asset_key=context.asset_key,
                check_name=r.name,
                passed=r.passed,
                severity=AssetCheckSeverity.ERROR if r.severity == ERROR else AssetCheckSeverity.WARN,
                description=r.description[:1000],
                metadata={
                    "course_key": context.partition_key,
                    **{k: _metadata_value(v) for k, v in r.metadata.items()},
                },
            )
        )
    return out


def blocking_failures(asset: str, results: list[QcResult]) -> list[QcResult]:
    """The failed checks of ``asset`` that stop its course's downstream steps."""
    blocking = {name for name, is_blocking, _ in CHECKS[asset] if is_blocking}
    return [r for r in results if not r.passed and r.severity == ERROR and r.name in blocking]


def _parts_state(parts: Path) -> tuple:
    """What the parts are now: (name, size, mtime_ns) of each, sorted."""
    out = []
    for part in sorted(parts.glob("*.json")):
        if part.name.startswith("."):  # another writer's part on its way (fileio.atomic_path)
            continue
        try:
            st = part.stat()
        except FileNotFoundError:
            continue
        out.append((part.name, st.st_ino, st.st_size, st.st_mtime_ns))  # a rename gives a new inode
    return tuple(out)


def record(course_dir: Path, asset: str, results: list[QcResult], max_rounds: int = 20) -> Path:
    """Write ``qc/<asset>.json`` and rebuild ``qc.json`` from every asset's part.

    No lock (the course folder may be on a network file system shared by workers on several
    machines): each part and ``qc.json`` are written by rename, and after writing ``qc.json`` the
    writer checks that the parts are still those it merged, merging again if another step wrote
    one meanwhile. The last rename is then always a merge of every part (a writer whose merge
    missed a part sees the change and writes again, after the other writer's part)."""
    course_dir = Path(course_dir)
    parts = course_dir / QC_DIR
    parts.mkdir(parents=True, exist_ok=True)
    write_json_atomic(parts / f"{asset}.json", [to_dict(r) for r in results])
    for _ in range(max_rounds):
        before = _parts_state(parts)
        merged: list[QcResult] = []
        for name, *_ in before:
            try:
                merged += [from_dict(d) for d in json.loads((parts / name).read_text())]
            except FileNotFoundError:
                continue
        path = write_json_atomic(course_dir / QC_FILE, qc_json(merged, course_key=course_dir.name))
        if _parts_state(parts) == before:
            return path
    log.warning(
        "qc.json of %s: the parts kept changing over %d merges; the last one is kept", course_dir.name, max_rounds
    )
    return path


def _metadata_value(value):
    if isinstance(value, bool | int | float | str) or value is None:
        return value if value is not None else "none"
    return MetadataValue.json(value)
