"""What each course needs: only what changed since its last successful materialization.

Dagster already knows most of it. Each asset has a code version, each materialization records it,
its data version (sha256 of the output files) and the data versions of the inputs it consumed, so
Dagster's stale status says, per course partition, whether an output is MISSING, STALE (its code
changed, or an input's data changed since) or FRESH. This module adds what Dagster cannot see:

* the drop: ``course_manifest`` records the course's content fingerprint (SOP Instance UIDs and
  file digests); a different fingerprint now means the course changed and runs again in full;
* the settings: every materialization records ``settings_sha256``, the digest of what in its
  resources' configuration changes outputs (radiomics parameter files by content, the
  TotalSegmentator task, custom-structure rules, crop regions); a different digest reruns the
  asset and what depends on it;
* failures: a course whose last run of a stage failed or was cancelled (a crash included) runs
  that stage again;
* deliberate skips: an optional output that was skipped with a reason (no dose: no DVH) is not
  "missing".

A course that needs nothing is "unchanged" and starts no run; one that needs part of its assets
gets a run of ``course_job`` restricted to them and their downstream assets. Segmentation and the
derived stage are decided when the course stage is done, from the same records.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterRunStatus, RunsFilter

from rt_assets.constants import (
    COHORT_GROUP,
    COHORT_JOB,
    COURSE_GROUP,
    COURSE_JOB,
    DERIVED_JOB,
    SEGMENTATION_JOB,
    UNFINISHED_RUNS,
)
from rt_assets.lineage import settings_digest
from rt_resources.ingest.linking import Course

FAILED = (DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED)
UNFINISHED = UNFINISHED_RUNS


@dataclass
class CoursePlan:
    course: Course
    reason: str = "unchanged"  #: why the course stage runs (or "unchanged")
    course_assets: list[str] = field(default_factory=list)  #: course_job assets to run; all of them = full job
    full: bool = False  #: the whole course_job


class Planner:
    """Decides per course (and for the cohort) what to run, from the instance's records and the
    code location that the CLI loaded with its settings."""

    def __init__(self, instance, defs, resources: dict) -> None:
        self.instance = instance
        self.defs = defs
        self.graph = defs.resolve_asset_graph()
        self.resources = resources
        self._digests: dict[tuple[str, ...], str] = {}
        self.course_job_assets = self._group(COURSE_GROUP)
        self.derived_assets = sorted(
            {k.to_user_string() for k in defs.resolve_job_def(DERIVED_JOB).asset_layer.selected_asset_keys}
        )
        self.cohort_assets = self._group(COHORT_GROUP)

    # ------------------------------------------------------------------ records

    def _group(self, group: str) -> list[str]:
        return sorted(
            k.to_user_string() for k in self.graph.get_all_asset_keys() if self.graph.get(k).group_name == group
        )

    def code_version(self, asset: str) -> str | None:
        return self.graph.get(AssetKey(asset)).code_version

    def settings_sha256(self, asset: str, keys: Iterable[str] | None = None) -> str:
        """The digest an asset materialized now would record (see :func:`rt_assets.lineage.lineage_metadata`);
        over ``keys`` only, when given (a skip's deciding resources). Cached: the settings do not
        change while a planner exists, and the digest reads parameter files."""
        if keys is None:
            keys = self.defs.get_assets_def(AssetKey(asset)).required_resource_keys - {"io_manager"}
        cache_key = tuple(sorted(keys))
        if cache_key not in self._digests:
            self._digests[cache_key] = settings_digest({k: self.resources[k] for k in cache_key if k in self.resources})
        return self._digests[cache_key]

    def latest(self, asset: str, partitions: Iterable[str]) -> dict[str, object]:
        """Partition -> its latest materialization record, in two queries for all partitions."""
        key = AssetKey(asset)
        ids = self.instance.get_latest_storage_id_by_partition(
            key, DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
        )
        if not ids:
            return {}
        records = self.instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, storage_ids=list(ids.values())), limit=len(ids)
        ).records
        return {r.partition_key: r for r in records}

    def skipped(self, asset: str, partition: str) -> bool:
        """The asset's latest word on this partition is a deliberate skip (an observation saying why)."""
        key = AssetKey(asset)
        obs = self.instance.fetch_observations(AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1)
        metadata = (obs.records[0].asset_observation.metadata or {}) if obs.records else {}
        if "skipped" not in metadata:
            return False
        keys = metadata["settings_keys"].value if "settings_keys" in metadata else None
        if "settings_sha256" in metadata and metadata["settings_sha256"].value != self.settings_sha256(asset, keys):
            return False  # skipped under other settings (robustness was off, no rules were configured)
        mats = self.instance.fetch_materializations(AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), 1)
        return not mats.records or mats.records[0].storage_id < obs.records[0].storage_id

    def last_runs(self, job_name: str) -> dict[str, object]:
        """Partition -> the latest run of ``job_name`` for it (every course: one query)."""
        out: dict[str, object] = {}
        for run in self.instance.get_runs(RunsFilter(job_name=job_name)):  # newest first
            out.setdefault(run.tags.get("dagster/partition", ""), run)
        return out

    def last_run(self, job_name: str, partition: str):
        """The latest run of ``job_name`` for one course, or None (one query, not the job's history)."""
        runs = self.instance.get_runs(RunsFilter(job_name=job_name, tags={"dagster/partition": partition}), limit=1)
        return runs[0] if runs else None

    def resolver(self):
        """A fresh Dagster stale-status resolver (it caches: make one per decision round)."""
        from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView, TemporalContext
        from dagster._core.definitions.data_version import CachingStaleStatusResolver
        from dagster._time import get_current_datetime

        view = AssetGraphView(
            temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
            instance=self.instance,
            asset_graph=self.graph,
        )
        return CachingStaleStatusResolver(self.instance, self.graph, view)

    def _own_changes(self, resolver, asset: str, partition: str, record, parents_latest=None) -> str | None:
        """Why ``asset`` of ``partition`` must be recomputed, looking at itself only, or None.

        ``record`` is its latest materialization. Code version and settings digest are read from
        it. Whether an input's data changed since is Dagster's stale status; it is asked only when
        an upstream asset was materialized after this output (``parents_latest``: upstream asset
        -> partition -> latest record; None: always ask), which saves its queries in the common
        case of a course whose assets were last materialized together. ``resolver`` makes the
        (cached) resolver on first use."""
        from dagster._core.definitions.data_version import StaleCauseCategory, StaleStatus

        key = AssetKey(asset)
        if record is None:
            return None if self.skipped(asset, partition) else f"{asset} never materialized"
        recorded_code = (record.asset_materialization.tags or {}).get("dagster/code_version")
        if recorded_code != self.code_version(asset):
            return f"{asset}: code version {recorded_code} -> {self.code_version(asset)}"
        recorded = (record.asset_materialization.metadata or {}).get("settings_sha256")
        if recorded is not None and recorded.value != self.settings_sha256(asset):
            return f"{asset}: settings changed"
        if parents_latest is not None:
            newer = [
                parent
                for parent in self.graph.get(key).parent_keys
                if (up := parents_latest.get(parent.to_user_string(), {}).get(partition)) is not None
                and up.storage_id > record.storage_id
            ]
            if not newer:
                return None
        status = resolver().get_status(key, partition)
        if status == StaleStatus.STALE:
            causes = [
                c for c in resolver().get_stale_causes(key, partition) if c.category != StaleCauseCategory.DEPENDENCIES
            ]
            if causes:
                return f"{asset}: {causes[0].reason}"
        return None

    def lazy_resolver(self):
        """A function returning one stale-status resolver, made on first call."""
        made = []

        def get():
            if not made:
                made.append(self.resolver())
            return made[0]

        return get

    def downstream(self, assets: Iterable[str], within: Iterable[str]) -> list[str]:
        """``assets`` and everything downstream of them, restricted to ``within``."""
        keep = set(within)
        todo, seen = [AssetKey(a) for a in assets], set()
        while todo:
            key = todo.pop()
            if key in seen:
                continue
            seen.add(key)
            todo.extend(self.graph.get(key).child_keys)
        return sorted(k.to_user_string() for k in seen if k.to_user_string() in keep)

    # ------------------------------------------------------------------ decisions

    def plan_courses(self, courses: list[Course], force: bool) -> list[CoursePlan]:
        """The course stage of every course: a full run, a run of some assets, or nothing."""
        keys = {c.key for c in courses}
        manifests = self.latest("course_manifest", keys)
        last_runs = self.last_runs(COURSE_JOB)
        partitioned = [k.to_user_string() for k in self.graph.get_all_asset_keys() if self.graph.get(k).partitions_def]
        latest = {a: self.latest(a, keys) for a in partitioned}
        resolver = self.lazy_resolver()
        plans = []
        for course in courses:
            plan = CoursePlan(course)
            manifest = manifests.get(course.key)
            fingerprint = manifest.asset_materialization.metadata.get("fingerprint") if manifest else None
            last = last_runs.get(course.key)
            if force:
                plan.reason = "forced"
            elif manifest is None:
                plan.reason = "new"
            elif fingerprint is None or fingerprint.value != course.fingerprint:
                plan.reason = "content changed"
            elif last is not None and last.status in FAILED:
                plan.reason = f"last run {last.status.value.lower()}"
            else:
                changed = {}
                for asset in self.course_job_assets:
                    why = self._own_changes(resolver, asset, course.key, latest[asset].get(course.key), latest)
                    if why:
                        changed[asset] = why
                if changed:
                    plan.reason = "; ".join(sorted(set(changed.values())))[:200]
                    plan.course_assets = self.downstream(changed, self.course_job_assets)
                    plan.full = set(plan.course_assets) == set(self.course_job_assets)
                plans.append(plan)
                continue
            plan.course_assets, plan.full = list(self.course_job_assets), True
            plans.append(plan)
        return plans

    def segmentation_needed(self, course_key: str, available: list[str]) -> list[str]:
        """The available segmentation assets that are missing, stale or differently configured for
        the course (asked once its course stage is done, so a changed CT counts)."""
        if not available:
            return []
        last = self.last_run(SEGMENTATION_JOB, course_key)
        resolver = self.lazy_resolver()
        needed = []
        for asset in available:
            record = self.latest(asset, [course_key]).get(course_key)
            if (last is not None and last.status in FAILED) or self._own_changes(resolver, asset, course_key, record):
                needed.append(asset)
        return needed

    def derived_needed(self, course_key: str, segmented: bool, custom_rules: bool) -> bool:
        """Crops, custom structures and the DVH/radiomics/preview with auto structures: after a
        segmentation, or when custom-structure rules are set and their output is not up to date."""
        if segmented:
            return True
        last = self.last_run(DERIVED_JOB, course_key)
        if last is not None and last.status in FAILED:
            return True
        if not custom_rules:
            return False
        record = self.latest("custom_structures", [course_key]).get(course_key)
        if record is None:
            return True
        return self._own_changes(self.lazy_resolver(), "custom_structures", course_key, record) is not None

    def cohort_needed(self, drop_state: str, ran_something: bool) -> str | None:
        """Why the cohort tables must be rebuilt, or None: anything ran; a cohort table is not built
        from the latest course materializations, or the drop changed (the same test as
        cohort_sensor's); their code or settings changed; the last build failed."""
        from rt_assets.sensors.cohort_sensor import stale_cohort_tables

        if ran_something:
            return "courses were processed"
        runs = self.instance.get_runs(RunsFilter(job_name=COHORT_JOB), limit=1)
        if not runs:
            return "never built"
        if runs[0].status != DagsterRunStatus.SUCCESS:
            return f"last build {runs[0].status.value.lower()}"
        stale = stale_cohort_tables(self.instance, drop_state)
        if stale:
            return "; ".join(f"{asset}: {why}" for asset, why in sorted(stale.items()))
        for asset in self.cohort_assets:
            records = self.instance.fetch_materializations(AssetKey(asset), limit=1).records
            if not records:
                return f"{asset} never materialized"
            mat = records[0].asset_materialization
            if (mat.tags or {}).get("dagster/code_version") != self.code_version(asset):
                return f"{asset}: code changed"
            recorded = (mat.metadata or {}).get("settings_sha256")
            if recorded is not None and recorded.value != self.settings_sha256(asset):
                return f"{asset}: settings changed"
        return None
