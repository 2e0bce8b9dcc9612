"""What every course asset starts from: the course's output paths, its manifest, and failures
that name the course. ``structure_masks`` is the reference asset that shows the pattern."""

from __future__ import annotations

from dataclasses import dataclass

from dagster import AssetExecutionContext, Failure

from rt_resources.course_paths import CoursePaths
from rt_resources.dicom.sop_classes import Kind
from rt_resources.ingest.manifest import Manifest, ManifestError, ManifestFile, source_files
from rt_resources.resources import DataRoot


@dataclass(frozen=True)
class CourseInputs:
    key: str
    paths: CoursePaths
    manifest: Manifest

    def fail(self, message: object, **kwargs) -> Failure:
        """A step failure whose description starts with the course key."""
        return course_failure(self.key, message, **kwargs)

    def sources(self, kind: Kind, series_uid: str | None = None) -> list[ManifestFile]:
        """The course's source files of one kind (and series), found and sha256-checked
        (:func:`rt_resources.ingest.manifest.source_files`), or a failure naming the course."""
        try:
            return source_files(self.manifest, kind, series_uid)
        except ManifestError as exc:
            raise self.fail(exc) from exc


def course_failure(key: str, message: object, **kwargs) -> Failure:
    return Failure(description=f"course {key}: {message}", **kwargs)


def course_paths(context: AssetExecutionContext, data_root: DataRoot) -> CoursePaths:
    """The output paths of the step's course (its partition)."""
    return data_root.course(context.partition_key)


def open_course(context: AssetExecutionContext, data_root: DataRoot) -> CourseInputs:
    """The step's course with its manifest, or a failure naming the course (no manifest yet,
    or one that cannot be read)."""
    paths = course_paths(context, data_root)
    try:
        data_root.check_mounted()
    except FileNotFoundError as exc:
        raise course_failure(paths.key, exc) from exc
    try:
        manifest = data_root.read_manifest(paths.key)
    except ManifestError as exc:
        raise course_failure(paths.key, exc) from exc
    return CourseInputs(paths.key, paths, manifest)
