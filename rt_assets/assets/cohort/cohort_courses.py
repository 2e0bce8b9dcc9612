from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.cohort_inputs import (
    COHORT_INPUTS,
    courses_in_flight,
    coverage_result,
    coverage_spec,
    input_ids,
    record_inputs,
)
from rt_assets.lineage import lineage_metadata
from rt_assets.table_schemas import COURSES, row_count, schema_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.ingest.survey import courses_table
from rt_resources.resources import DataRoot, DicomDrop

#: the key map's columns that identify no one (shown in the UI)
PUBLIC_COLUMNS = ["course_key", "n_ct_slices", "n_rtstruct", "n_rtplan", "n_rtdose", "n_reg", "n_files"]


@asset(
    deps=["course_manifest"],
    code_version="2",
    kinds={"parquet"},
    check_specs=[coverage_spec("cohort_courses")],
    metadata=schema_metadata(COURSES),
)
def cohort_courses(context: AssetExecutionContext, data_root: DataRoot, dicom_drop: DicomDrop) -> MaterializeResult:
    """The key map: every course of the drop, one row each (cohort/courses.parquet, or where the
    key_map setting puts it, with mode 0600): the only file that maps the pseudonymous course key
    to the patient (PatientID, name, study UIDs), plus what each course holds. Nothing else the
    pipeline writes (research tables, Dagster's storage) holds a PatientID or a name."""
    ids = input_ids(context.instance, COHORT_INPUTS["cohort_courses"])
    survey = dicom_drop.survey(data_root)
    table = courses_table(survey.links)
    path = write_parquet_atomic(data_root.key_map_path(), table, mode=0o600)
    present = set(table["course_key"]) if len(table) else set()
    return MaterializeResult(
        check_results=[
            coverage_result("cohort_courses", set(ids["course_manifest"]), present, courses_in_flight(context.instance))
        ],
        metadata={
            "inputs_sha256": record_inputs(data_root.cohort_dir(), "cohort_courses", ids),
            "path": MetadataValue.path(str(path)),
            "n_courses": len(table),
            **row_count(len(table)),
            "preview": MetadataValue.md(
                table[[c for c in PUBLIC_COLUMNS if c in table.columns]].head(20).to_markdown(index=False)
            ),
            **lineage_metadata(
                context,
                source_uids={"course_keys": sorted(table["course_key"]) if len(table) else []},
                input_sha256={c.key: c.fingerprint for c in survey.courses},
            ),
        },
    )
