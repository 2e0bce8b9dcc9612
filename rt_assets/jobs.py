"""Jobs: one run per course partition, and one for the cohort tables."""

from dagster import AssetSelection, define_asset_job

from rt_assets.constants import (
    COHORT_GROUP,
    COHORT_JOB,
    COURSE_GROUP,
    COURSE_JOB,
    DERIVED_GROUP,
    DERIVED_JOB,
    SEGMENTATION_GROUP,
    SEGMENTATION_JOB,
    TAG_GPU,
)

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

segmentation_job = define_asset_job(
    SEGMENTATION_JOB,
    selection=AssetSelection.groups(SEGMENTATION_GROUP),
    tags={TAG_GPU: "true"},  # dagster.yaml: at most one such run at a time
    description="GPU stage of one course: TotalSegmentator and custom nnU-Net models (one at a time).",
)

derived_job = define_asset_job(
    DERIVED_JOB,
    selection=AssetSelection.groups(DERIVED_GROUP)
    | AssetSelection.assets("dvh", "dvh_eqd2", "contour_agreement", "pet_metrics", "radiomics", "course_preview"),
    description="After segmentation: anatomical crops, custom structures, and the DVH (physical and EQD2), "
    "the auto vs manual agreement, SUV metrics, radiomics and preview again with the auto structures (what the "
    "automation does after a segmentation).",
)
