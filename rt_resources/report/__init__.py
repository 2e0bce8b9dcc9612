"""The cohort report: one self-contained HTML page about a processed data root (``rtpipeline report``).

:func:`write_report` reads the cohort tables (:mod:`.inputs`), builds one section per subject
(:mod:`.sections`, figures from :mod:`.figures`, DVH bands from :mod:`.bands`) and writes the page
(:mod:`.cohort_report`).
"""

from rt_resources.report.cohort_report import ReportSummary, render, write_report
from rt_resources.report.inputs import CohortTables, ReportError, read_cohort

__all__ = ["CohortTables", "ReportError", "ReportSummary", "read_cohort", "render", "write_report"]
