"""Start courses when DICOM lands in the drop folder."""

import json
import time

from dagster import (
    DefaultSensorStatus,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from rt_assets.config import current_settings
from rt_assets.constants import COURSE_JOB
from rt_assets.jobs import course_job
from rt_assets.partitions import course_partitions
from rt_assets.run_tags import course_tags
from rt_resources.ingest.survey import course_readiness
from rt_resources.provenance import digest_of
from rt_resources.resources import DataRoot, DicomDrop

DROP_STATE = "__drop_state__"  #: request-ledger subject: what the cohort tables should be built from


def drop_state(survey) -> str:
    """Digest of what the drop gives the cohort tables: every course (key, content) and every
    file the linker refused (path, reason). ingest_report records it; cohort_sensor compares."""
    courses = [f"{c.key}:{c.fingerprint}" for c in survey.courses]
    return digest_of(courses + [f"{r.path}\t{r.reason}" for r in survey.links.rejections])[:32]


def course_run_key(course_key: str, fingerprint: str) -> str:
    return f"{course_key}:{fingerprint[:16]}"


def read_cursor(cursor: str | None) -> tuple[int, str, bool]:
    """``(generation, index token, courses waiting)`` of a tick's cursor. A cursor of an earlier
    version (``{"generation": N}``) names no index version: the next tick is a full one."""
    if not cursor:
        return 0, "", True
    data = json.loads(cursor)
    return int(data["generation"]), str(data.get("index", "")), bool(data.get("waiting", True))


@sensor(
    jobs=[course_job],
    minimum_interval_seconds=current_settings().sensor_interval_s,
    default_status=DefaultSensorStatus.RUNNING,
)
def dicom_drop_sensor(context: SensorEvaluationContext, data_root: DataRoot, dicom_drop: DicomDrop):
    """Scan the drop folder (incrementally), add each course that has been quiet for the
    quiet period (or sits under a _COMPLETE marker) as a partition, and request its run in
    the same tick. The run key fingerprints the course's content: a re-sent, changed course
    runs again; an unchanged one never does. Unusable files go to ingest_report: this sensor notes
    the drop's state in its ledger, and cohort_sensor rebuilds the cohort tables once no run is in
    flight (never beside course runs still writing).

    A tick's cost follows what changed: it first refreshes the drop's index (only folders that
    changed are listed; every file is re-stat-ed every ``full_rescan_s``, see
    :mod:`rt_resources.ingest.index`). When the index is as the last committed tick saw it (the
    cursor keeps its token) and that tick left no course waiting for its quiet period, a full tick
    would request nothing: the tick ends there, keeping the cursor, without loading the index,
    linking courses or writing the ledger."""
    if not dicom_drop.path:
        return SkipReason("no drop folder configured (set RT_DROP_ROOT)")
    if not dicom_drop.root.is_dir():
        return SkipReason(f"drop folder {dicom_drop.root} does not exist yet")
    generation, seen_token, was_waiting = read_cursor(context.cursor)
    refreshed = dicom_drop.refresh(data_root)
    if seen_token and refreshed.token == seen_token and not was_waiting:
        return SensorResult(
            skip_reason=SkipReason(
                f"drop unchanged since the last tick: {refreshed.n_files} files in {refreshed.n_dirs} folders "
                f"({refreshed.n_listed} listed, 0 parsed this tick{', full re-stat' if refreshed.full else ''}); "
                "no course waiting for quiet"
            ),
            cursor=context.cursor,
        )
    survey = dicom_drop.survey(data_root, refreshed=refreshed)
    now = time.time()
    ledger = data_root.ledger()
    done = ledger.confirmed(generation)

    ready, waiting = [], []
    for course in survey.courses:
        is_ready, why = course_readiness(survey, course, dicom_drop.quiet_period_s, now)
        (ready if is_ready else waiting).append((course, why))
        if not is_ready:
            context.log.debug(f"{course.key}: {why}")

    existing = set(context.instance.get_dynamic_partitions(course_partitions.name))
    new_keys = [c.key for c, _ in ready if c.key not in existing]
    requests: list[RunRequest] = []
    requested: dict[str, str] = {}
    for course, why in ready:
        if done.get(course.key) == course.fingerprint:
            continue
        requested[course.key] = course.fingerprint
        context.log.info(f"{course.key}: requesting run ({why})")
        requests.append(
            RunRequest(
                run_key=course_run_key(course.key, course.fingerprint),
                job_name=COURSE_JOB,
                partition_key=course.key,
                tags=course_tags(course, "sensor", current_settings().priority),
            )
        )
    next_generation = generation + 1
    ledger.record(requested, next_generation)
    state = drop_state(survey)
    if done.get(DROP_STATE) != state:  # generation 0: always among the confirmed; no write when unchanged
        ledger.record({DROP_STATE: state}, 0)
    cursor = json.dumps({"generation": next_generation, "index": survey.scan.token, "waiting": len(waiting)})
    if not requests and not new_keys:
        return SensorResult(
            skip_reason=SkipReason(
                f"{len(survey.scan.entries)} files ({survey.scan.n_parsed} parsed this tick), "
                f"{len(ready)} courses up to date, {len(waiting)} waiting for quiet"
            ),
            cursor=cursor,
        )
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[course_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
    )
