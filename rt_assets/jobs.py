"""Jobs: one run per course partition, and one for the cohort tables."""

from dagster import AssetSelection, define_asset_job

from rt_assets.constants import COHORT_GROUP, COHORT_JOB, COURSE_GROUP, COURSE_JOB

course_job = define_asset_job(
    COURSE_JOB,
    selection=AssetSelection.groups(COURSE_GROUP),
    description="Everything for one course: manifest, CT volume (and later dose, masks, DVH, features).",
)

cohort_job = define_asset_job(
    COHORT_JOB,
    selection=AssetSelection.groups(COHORT_GROUP),
    description="Cohort tables over all courses: courses.parquet and ingest_report.parquet.",
)
