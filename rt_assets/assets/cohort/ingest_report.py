from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, asset

from rt_assets.lineage import lineage_metadata
from rt_resources.fileio import write_parquet_atomic
from rt_resources.ingest.survey import ingest_report_table
from rt_resources.provenance import digest_of
from rt_resources.resources import DataRoot, DicomDrop


@asset(code_version="1", kinds={"parquet"})
def ingest_report(context: AssetExecutionContext, data_root: DataRoot, dicom_drop: DicomDrop) -> MaterializeResult:
    """Every file of the drop that no course uses, with the reason a person can act on
    (cohort/ingest_report.parquet): non-DICOM, truncated, DICOMDIR, a dose whose plan is
    missing, a structure set whose CT is missing, conflicting duplicates, ..."""
    survey = dicom_drop.survey(data_root)
    table = ingest_report_table(survey.links)
    path = write_parquet_atomic(data_root.cohort_dir() / "ingest_report.parquet", table)
    return MaterializeResult(
        metadata={
            "path": MetadataValue.path(str(path)),
            "n_files_scanned": len(survey.scan.entries),
            "n_files_not_used": len(table),
            "n_courses": len(survey.courses),
            "preview": MetadataValue.md(
                table.head(50).to_markdown(index=False) if len(table) else "every file is used"
            ),
            **lineage_metadata(
                context,
                source_uids={"drop_root": str(dicom_drop.root)},
                input_sha256={"drop_files": digest_of(e.sha256 for e in survey.scan.entries)},
            ),
        }
    )
