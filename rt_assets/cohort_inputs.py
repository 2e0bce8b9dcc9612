"""What a cohort table was built from, so that it provably covers every course, and stays so.

A cohort table stacks the course tables of every course. Built while course runs are still
writing, it can miss a course, and an automation condition that counts "dependency updated since
last handled" by time can take those later updates as handled: the table stays one course short
for good (seen in a 20-course load test). Here the inputs are versions, not times:

* before it reads a single course file, a cohort table records the storage id of the latest
  materialization of each course asset it is built from, per course (:func:`input_ids`); reading
  after recording means a recorded id is never newer than what was read (at worst a needless
  rebuild, never a missed one);
* its materialization carries the digest of those ids (``inputs_sha256``), and the full map sits
  beside the table (``cohort/.inputs/<asset>.json``, local);
* a ``coverage`` check on the table lists the courses that have the course table but are not in
  the cohort table (missing), at the moment it was built;
* ``cohort_sensor`` (:mod:`rt_assets.sensors.cohort_sensor`) compares, once no run is queued or in
  flight, each cohort table's recorded digest with the digest of the current latest ids, and
  requests one ``cohort_job`` run (run key: the state) when any differs.
"""

from __future__ import annotations

from pathlib import Path

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetKey, DagsterEventType

from rt_assets.qc import CHECKS
from rt_resources.fileio import write_json_atomic
from rt_resources.provenance import digest_of

INPUTS_DIR = ".inputs"
COVERAGE = "coverage"

#: the course assets whose checks cohort_qc gathers
CHECKED_ASSETS = tuple(sorted(CHECKS))
COURSE_ASSETS = (
    "course_manifest",
    "course_preview",
    "ct_crop",
    "ct_image",
    "custom_structures",
    "dose_grid",
    "contour_agreement",
    "dvh",
    "dvh_eqd2",
    "mr_images",
    "pet_images",
    "pet_metrics",
    "radiomics",
    "radiomics_robustness",
    "structure_masks",
    "totalseg_inference",
    "totalseg_input",
    "totalseg_masks",
    "totalseg_rtstruct",
)

#: cohort asset -> the course assets it is built from
COHORT_INPUTS: dict[str, tuple[str, ...]] = {
    "cohort_courses": ("course_manifest",),
    "ingest_report": ("course_manifest", "ct_image", "dose_grid", "structure_masks", "mr_images", "pet_images"),
    "cohort_dvh_metrics": ("dvh", "dvh_eqd2"),
    "cohort_radiomics": ("radiomics",),
    "cohort_pet_metrics": ("pet_metrics",),
    "cohort_agreement": ("contour_agreement",),
    "cohort_unmapped_rois": ("radiomics", "dvh"),
    "cohort_radiomics_robustness": ("radiomics_robustness",),
    "cohort_qc": CHECKED_ASSETS,
    "cohort_audit": COURSE_ASSETS,
}


#: cohort tables that give each row its standard name (roi_std): the name mapping is one of their
#: inputs, recorded like a course asset (``roi_names`` -> ``{<mapping digest>: 0}``), so a changed
#: mapping makes them, and only them, stale
NAMED_TABLES = ("cohort_dvh_metrics", "cohort_radiomics", "cohort_pet_metrics", "cohort_unmapped_rois")
MAPPING_INPUT = "roi_names"


def with_mapping(asset: str, ids: dict[str, dict[str, int]], mapping_digest: str) -> dict[str, dict[str, int]]:
    """``ids`` plus the name mapping's version when ``asset`` is one of :data:`NAMED_TABLES`."""
    return {**ids, MAPPING_INPUT: {mapping_digest[:16]: 0}} if asset in NAMED_TABLES else ids


def current_mapping_digest() -> str:
    """The digest of the name mapping this code location's settings give."""
    from rt_assets.config import current_settings
    from rt_resources.resources import science_config

    try:
        return science_config(current_settings()).name_map().digest
    except (OSError, ValueError) as exc:  # a broken site file: the tables that map names fail, saying why
        from rt_resources.provenance import digest_of

        return "unreadable-" + digest_of([str(exc)])[:16]


def input_ids(instance, assets: tuple[str, ...]) -> dict[str, dict[str, int]]:
    """Course asset -> course key -> storage id of its latest materialization (one query each)."""
    out = {}
    for asset in assets:
        ids = instance.get_latest_storage_id_by_partition(AssetKey(asset), DagsterEventType.ASSET_MATERIALIZATION)
        out[asset] = {k: int(v) for k, v in sorted(ids.items())}
    return out


def inputs_digest(ids: dict[str, dict[str, int]]) -> str:
    return digest_of(f"{asset}/{key}:{sid}" for asset, per in ids.items() for key, sid in per.items())[:32]


def record_inputs(cohort_dir: Path, asset: str, ids: dict[str, dict[str, int]]) -> str:
    """Write the map beside the cohort tables; returns its digest (for the metadata)."""
    write_json_atomic(Path(cohort_dir) / INPUTS_DIR / f"{asset}.json", ids)
    return inputs_digest(ids)


def coverage_spec(asset: str) -> AssetCheckSpec:
    return AssetCheckSpec(
        COVERAGE,
        asset=asset,
        description="every course that has the course table is in the cohort table (by the latest "
        "materialization of its course asset, not by time)",
    )


def coverage_result(asset: str, expected: set[str], present: set[str], in_flight: set[str]) -> AssetCheckResult:
    """WARN when a course with the course table is not in the cohort table (it is rebuilt by
    cohort_sensor once no run is in flight)."""
    missing = sorted(expected - present)
    pending = sorted(set(missing) & in_flight)
    return AssetCheckResult(
        asset_key=AssetKey(asset),
        check_name=COVERAGE,
        passed=not missing,
        severity=AssetCheckSeverity.WARN,
        description=(
            f"all {len(expected)} courses with the course table are in it"
            if not missing
            else f"{len(missing)} of {len(expected)} courses missing ({len(pending)} with a run in flight): "
            + ", ".join(missing[:20])
            + ("; cohort_sensor rebuilds the table once no run is in flight" if missing else "")
        ),
        metadata={"n_expected": len(expected), "n_present": len(present), "missing": missing, "in_flight": pending},
    )


def courses_in_flight(instance) -> set[str]:
    from dagster import RunsFilter

    from rt_assets.constants import UNFINISHED_RUNS

    runs = instance.get_runs(RunsFilter(statuses=list(UNFINISHED_RUNS)))
    return {r.tags["dagster/partition"] for r in runs if r.tags.get("dagster/partition")}
