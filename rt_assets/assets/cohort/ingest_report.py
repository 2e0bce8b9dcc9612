from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.cohort_inputs import COHORT_INPUTS, input_ids, record_inputs
from rt_assets.lineage import lineage_metadata
from rt_assets.table_schemas import INGEST_REPORT, row_count, schema_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.ingest.course_keys import load_site_secret
from rt_resources.ingest.index import DropIndex
from rt_resources.ingest.refusals import course_refusals
from rt_resources.ingest.survey import ingest_report_table
from rt_resources.privacy import Scrubber, file_id
from rt_resources.provenance import digest_of
from rt_resources.resources import DataRoot, DicomDrop

COLUMNS = ["file_id", "path", "reason", "kind", "course_key", "stage"]


@asset(
    deps=["ct_image", "dose_grid", "structure_masks", "mr_images", "pet_images"],
    code_version="2",
    kinds={"parquet"},
    metadata=schema_metadata(INGEST_REPORT),
)
def ingest_report(context: AssetExecutionContext, data_root: DataRoot, dicom_drop: DicomDrop) -> MaterializeResult:
    """Every file of the drop that no course output uses, with the reason a person can act on
    (cohort/ingest_report.parquet: file_id, path, reason, kind, course_key, stage): refused by the
    linker (non-DICOM, truncated, DICOMDIR, a dose whose plan is missing, a structure set whose CT
    is missing, conflicting duplicates; no course key, no stage) or by a course's own stage while
    it was materialized (a CT with a missing slice or a tilted gantry: ct_image; a RELATIVE dose or
    a dose on another frame of reference: dose_grid). The table is local to the data root and has
    the real paths; here, in the UI, files appear by their file id only."""
    import pandas as pd

    ids = input_ids(context.instance, COHORT_INPUTS["ingest_report"])  # before reading the course refusals
    survey = dicom_drop.survey(data_root)
    linker = ingest_report_table(survey.links).assign(course_key="", stage="")
    table = pd.concat([linker, course_refusals(data_root.root / "courses")], ignore_index=True)
    secret = load_site_secret(data_root.root)
    table.insert(0, "file_id", [file_id(secret, p) for p in table["path"]])
    table = table[COLUMNS].sort_values(["course_key", "stage", "path"], ignore_index=True)
    path = write_parquet_atomic(data_root.cohort_dir() / "ingest_report.parquet", table)
    paths = list(table["path"])
    # every file of the drop is a literal: a reason may name another file (the copy a duplicate
    # duplicates, the files of a conflict), whose path must not reach the UI either
    scrubber = Scrubber(
        secret,
        dicom_drop.root,
        [e.path for e in survey.scan.entries],
        DropIndex(data_root.state(), dicom_drop.root).identifiers(paths),
    )
    shown = table.drop(columns=["path"]).head(50).assign(reason=lambda t: t["reason"].map(scrubber.text))
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "n_files_scanned": len(survey.scan.entries),
            "n_files_not_used": len(table),
            **row_count(len(table)),
            "n_refused_by_courses": int((table["stage"] != "").sum()),
            "n_courses": len(survey.courses),
            "inputs_sha256": record_inputs(data_root.cohort_dir(), "ingest_report", ids),
            "drop_state": survey.state,
            "preview": MetadataValue.md(shown.to_markdown(index=False) if len(table) else "every file is used"),
            **lineage_metadata(
                context,
                source_uids={"drop_root": str(dicom_drop.root)},
                input_sha256={"drop_files": digest_of(e.sha256 for e in survey.scan.entries)},
            ),
        }
    )
