"""The tags every run of a course carries, whoever submits it (drop sensor, CLI, UI re-execution).

* ``dagster/partition`` and ``rt/course``: the course key. dagster.yaml limits runs to one per
  unique ``dagster/partition`` value, so two runs never write one course at once, whoever
  launched them (automation runs carry the partition tag too).
* ``rt/fingerprint``: the course's content fingerprint when the run was requested.
* ``rt/launched_by``: sensor | cli.
* ``dagster/priority``: small courses first (``priority: size``): minus the course's size in
  thousands of (CT slices x ROIs), so a 100-slice, 10-ROI course (priority -1) runs before a
  400-slice, 60-ROI one (-24) and one large course does not hold back a queue of small ones.
  ``fifo`` leaves every run at priority 0 (the queue's order of arrival). Runs launched from the
  UI keep Dagster's default 0, so a run a person asks for goes before queued batch work.
  A course's derived stage (crops, DVH, radiomics and preview with the auto structures) gets
  ``DERIVED_PRIORITY_OFFSET`` less: the course and segmentation stages, which feed the GPU, go first.
"""

from __future__ import annotations

from rt_assets.constants import TAG_COURSE, TAG_FINGERPRINT, TAG_GPU, TAG_LAUNCHED_BY
from rt_resources.ingest.linking import Course

PRIORITY_TAG = "dagster/priority"
DERIVED_PRIORITY_OFFSET = 1000  #: a derived stage waits behind every course and segmentation stage


def course_size(course: Course) -> int:
    """CT slices x ROIs of the course's largest structure set (at least 1 ROI)."""
    slices = course.n_ct_slices
    rois = max((int(f.header.info.get("n_rois", 0)) for f in course.files_of("RTSTRUCT")), default=0)
    return max(1, slices) * max(1, rois)


def course_priority(course: Course, mode: str) -> int:
    """Run priority of ``course`` (higher runs first): see the module docstring."""
    if mode == "fifo":
        return 0
    return -(course_size(course) // 1000)


def course_tags(
    course: Course, launched_by: str, priority_mode: str, gpu: bool = False, derived: bool = False
) -> dict[str, str]:
    """Tags of a run of ``course`` (the partition tag is added by Dagster from the partition key);
    ``derived``: the course's derived stage (see the module docstring)."""
    priority = course_priority(course, priority_mode) - (DERIVED_PRIORITY_OFFSET if derived else 0)
    tags = {
        TAG_COURSE: course.key,
        TAG_FINGERPRINT: course.fingerprint[:16],
        TAG_LAUNCHED_BY: launched_by,
        PRIORITY_TAG: str(priority),
    }
    if gpu:
        tags[TAG_GPU] = "true"
    return tags
