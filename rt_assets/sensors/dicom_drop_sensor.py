"""Start courses when DICOM lands in the drop folder."""

import json
import time
from dataclasses import dataclass, field

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
from rt_resources.ingest.survey import course_folders, readiness
from rt_resources.resources import DataRoot, DicomDrop

DROP_STATE = "__drop_state__"  #: request-ledger subject: what the cohort tables should be built from


def course_run_key(course_key: str, fingerprint: str) -> str:
    return f"{course_key}:{fingerprint[:16]}"


@dataclass
class Cursor:
    """What a tick hands the next: the ledger generation, the index and link versions it saw, and
    the courses it left waiting for their quiet period."""

    generation: int = 0
    index: str = ""  #: :attr:`Refresh.token` ("" : the next tick is not a quick one)
    links: str = ""  #: :meth:`LinkStore.token` ("" : every course is looked at)
    waiting: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, cursor: str | None) -> "Cursor":
        """A cursor of an earlier version (no ``links``) makes the next tick look at every course."""
        if not cursor:
            return cls()
        data = json.loads(cursor)
        waiting = data.get("waiting")
        if "links" not in data or not isinstance(waiting, list):
            return cls(int(data["generation"]))
        return cls(int(data["generation"]), str(data.get("index", "")), str(data["links"]), list(waiting))

    def dump(self) -> str:
        return json.dumps(
            {"generation": self.generation, "index": self.index, "links": self.links, "waiting": self.waiting}
        )


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
    cursor keeps its token) and that tick left no course waiting for its quiet period, the tick
    ends there, keeping the cursor. Otherwise the link store applies what changed (linking again
    only the courses the changed files reach: :mod:`rt_resources.ingest.link_state`) and the tick
    looks only at the courses linked again since the cursor's link version and those the last
    tick left waiting; the others were requested (or found up to date) by an earlier tick whose
    cursor was committed."""
    if not dicom_drop.path:
        return SkipReason("no drop folder configured (set RT_DROP_ROOT)")
    if not dicom_drop.root.is_dir():
        return SkipReason(f"drop folder {dicom_drop.root} does not exist yet")
    seen = Cursor.read(context.cursor)
    refreshed = dicom_drop.refresh(data_root)
    if seen.index and refreshed.token == seen.index and not seen.waiting:
        return SensorResult(
            skip_reason=SkipReason(
                f"drop unchanged since the last tick: {refreshed.n_files} files in {refreshed.n_dirs} folders "
                f"({refreshed.n_listed} listed, 0 parsed this tick{', full re-stat' if refreshed.full else ''}); "
                "no course waiting for quiet"
            ),
            cursor=context.cursor,
        )
    store = dicom_drop.links(data_root)
    update = store.update()
    changed = store.changed_since(seen.links)
    keys = store.keys() if changed is None else sorted(set(changed) | set(seen.waiting))
    courses = store.courses(keys)
    markers = store.index.markers()
    now = time.time()
    ledger = data_root.ledger()
    ledger.forget_after(seen.generation)  # a tick after the committed one never reached the daemon
    done = ledger.confirmed(seen.generation)

    folders = {c.key: course_folders(c) for c in courses}
    unusable = store.unusable_changed_at(set().union(*folders.values()))
    ready, waiting = [], []
    for course in courses:
        last_unusable = max((unusable[f] for f in folders[course.key] if f in unusable), default=None)
        is_ready, why = readiness(course.files, markers, last_unusable, dicom_drop.quiet_period_s, now)
        (ready if is_ready else waiting).append((course, why))
        if not is_ready:
            context.log.debug(f"{course.key}: {why}")

    existing = set(context.instance.get_dynamic_partitions(course_partitions.name)) if ready else set()
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
    next_generation = seen.generation + 1
    ledger.record(requested, next_generation)
    state = store.state()
    if done.get(DROP_STATE) != state:  # generation 0: always among the confirmed; no write when unchanged
        ledger.record({DROP_STATE: state}, 0)
    cursor = Cursor(next_generation, refreshed.token, update.token, [c.key for c, _ in waiting]).dump()
    if not requests and not new_keys:
        looked = "every course" if changed is None else f"{len(courses)} changed or waiting"
        return SensorResult(
            skip_reason=SkipReason(
                f"{refreshed.n_files} files ({refreshed.n_parsed} parsed this tick; {update.n_relinked} linked "
                f"again), courses looked at: {looked}; {len(ready)} up to date, {len(waiting)} waiting for quiet"
            ),
            cursor=cursor,
        )
    return SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[course_partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
    )
