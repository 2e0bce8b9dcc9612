"""De-identified export of processed radiotherapy courses (DICOM PS3.15 Annex E, Basic Profile).

Public API::

    export_course(course_dir, dest, secret, drop_root=None) -> ExportReport
    export_courses(data_root, dest, secret, course_keys=None, drop_root=None) -> list[ExportReport]

The profile is applied with dicom-anonymizer's copy of the standard's Table E.1-1
(:mod:`.profile`), UIDs are replaced deterministically (:mod:`.uids`), what is written is checked
for identifiers left over (:mod:`.residual`), and the research tables go along (:mod:`.tables`).
"""

from rt_resources.export.course import ExportError, ExportReport, ExportUsageError, export_course, export_courses

__all__ = ["ExportError", "ExportReport", "ExportUsageError", "export_course", "export_courses"]
