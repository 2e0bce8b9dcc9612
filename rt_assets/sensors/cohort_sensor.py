"""Rebuild the cohort tables once the course runs are done, until they cover every course."""

from dagster import (
    AssetKey,
    DefaultSensorStatus,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from rt_assets.cohort_inputs import (
    COHORT_INPUTS,
    COURSE_ASSETS,
    current_mapping_digest,
    input_ids,
    inputs_digest,
    with_mapping,
)
from rt_assets.config import current_settings
from rt_assets.constants import COHORT_JOB, TAG_LAUNCHED_BY, UNFINISHED_RUNS
from rt_assets.jobs import cohort_job
from rt_assets.sensors.dicom_drop_sensor import DROP_STATE
from rt_resources.provenance import digest_of
from rt_resources.resources import DataRoot

BUSY = list(UNFINISHED_RUNS)


def latest_inputs(instance) -> dict[str, dict[str, dict[str, int]]]:
    """Cohort table -> the latest storage ids of its inputs, with one query per course asset (and
    the name mapping's version for the tables that map names)."""
    latest = input_ids(instance, COURSE_ASSETS)
    mapping = current_mapping_digest()
    return {
        asset: with_mapping(asset, {a: latest[a] for a in inputs}, mapping) for asset, inputs in COHORT_INPUTS.items()
    }


def stale_cohort_tables(instance, current_drop_state: str | None, latest: dict | None = None) -> dict[str, str]:
    """Cohort table -> why it is stale: the course assets it is built from have newer
    materializations than those it recorded (or it was never built), or the drop changed.
    ``latest``: :func:`latest_inputs`, when the caller has it already."""
    latest = latest if latest is not None else latest_inputs(instance)
    stale = {}
    for asset in COHORT_INPUTS:
        records = instance.fetch_materializations(AssetKey(asset), limit=1).records
        metadata = records[0].asset_materialization.metadata if records else {}
        recorded = metadata["inputs_sha256"].value if "inputs_sha256" in metadata else None
        if records and recorded == inputs_digest(latest[asset]):
            if asset == "ingest_report" and current_drop_state:
                built_from = metadata["drop_state"].value if "drop_state" in metadata else None
                if built_from != current_drop_state:
                    stale[asset] = "the drop's courses or unusable files changed"
            continue
        stale[asset] = "never built" if not records else "course assets materialized since it was built"
    return stale


@sensor(
    job=cohort_job,
    minimum_interval_seconds=current_settings().sensor_interval_s,
    default_status=DefaultSensorStatus.RUNNING,
)
def cohort_sensor(context: SensorEvaluationContext, data_root: DataRoot):
    """Once no run is queued or in flight, compare each cohort table (and the audit ledger) with
    the latest materializations of the course assets it is built from (by storage id, recorded
    before it read them: rt_assets/cohort_inputs.py) and with the drop's state; request one
    cohort_job run when any is stale. The run key is that state, so a state is built once; the
    tables converge whatever order the course runs finished in."""
    if context.instance.get_runs(RunsFilter(statuses=BUSY), limit=1):
        return SkipReason("runs queued or in flight: the cohort tables follow when they are done")
    if not context.instance.get_dynamic_partitions("courses"):
        return SkipReason("no course yet")
    drop_state = data_root.ledger().confirmed(0).get(DROP_STATE)
    latest = latest_inputs(context.instance)
    stale = stale_cohort_tables(context.instance, drop_state, latest)
    if not stale:
        return SkipReason("every cohort table is built from the latest course materializations")
    state = digest_of([inputs_digest(ids) for ids in latest.values()] + [drop_state or ""])
    context.log.info("cohort tables to rebuild: " + "; ".join(f"{a} ({why})" for a, why in sorted(stale.items())))
    return RunRequest(run_key=f"cohort:{state[:24]}", job_name=COHORT_JOB, tags={TAG_LAUNCHED_BY: "cohort_sensor"})
