from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.lineage import lineage_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.ingest.survey import courses_table
from rt_resources.resources import DataRoot, DicomDrop


@asset(deps=["course_manifest"], code_version="1", kinds={"parquet"})
def cohort_courses(context: AssetExecutionContext, data_root: DataRoot, dicom_drop: DicomDrop) -> MaterializeResult:
    """Every course of the drop, one row each (cohort/courses.parquet): the only place
    that maps the pseudonymous course key to the patient, plus what each course holds."""
    survey = dicom_drop.survey(data_root)
    table = courses_table(survey.links)
    path = write_parquet_atomic(data_root.cohort_dir() / "courses.parquet", table)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "n_courses": len(table),
            "preview": MetadataValue.md(
                table.drop(columns=["patient_id", "patient_name"], errors="ignore").head(20).to_markdown(index=False)
            ),
            **lineage_metadata(
                context,
                source_uids={"course_keys": sorted(table["course_key"]) if len(table) else []},
                input_sha256={c.key: c.fingerprint for c in survey.courses},
            ),
        }
    )
