"""Column schemas of the table assets, declared on their definitions (``dagster/column_schema``):
the UI shows them on each asset's page before anything is materialized, and a data scientist
reads what a column means and its unit there. Row counts are reported at materialization
(``dagster/row_count``, :func:`row_count`)."""

from __future__ import annotations

from dagster import TableColumn, TableSchema

_COURSE_KEY = TableColumn("course_key", "string", description="pseudonymous course key (c- + 12 hex); no PatientID")
_ROI = TableColumn("roi_name", "string", description="ROI name as contoured, or the model's class name")
_SOURCE = TableColumn(
    "source",
    "string",
    description="mask source: manual (the RTSTRUCT), totalseg, custom, an nnU-Net model, "
    "or mr1/manual (the manual masks on an MR), pet1/totalseg (a source's masks on a PET)",
)

_ROI_STD = TableColumn(
    "roi_std",
    "string",
    description="AAPM TG-263 standard name (e.g. Parotid_L, SpinalCord, PTV_7000); empty when unmapped "
    "or ambiguous (cohort/unmapped_rois.parquet lists those)",
)
_ROI_STD_RULE = TableColumn("roi_std_rule", "string", description="how roi_std was found (exact, synonym, ...)")


def _gy(name: str, what: str) -> TableColumn:
    return TableColumn(name, "float", description=f"{what} (Gy)")


_EQD2_INFO = [
    TableColumn("alpha_beta_gy", "float", description="alpha/beta used for the ROI's EQD2 (Gy)"),
    TableColumn("alpha_beta_source", "string", description="the alpha/beta table entry or default that gave it"),
    TableColumn("fractions", "string", description="fractions of each treatment phase, e.g. 25+8"),
    TableColumn("eqd2_reason", "string", description="why the EQD2 columns are empty (plan-sum dose, ...)"),
]
_EQD2_METRICS = [
    _gy(f"{m}_eqd2_gy", f"{what} in EQD2")
    for m, what in (
        ("mean", "mean dose"),
        ("min", "minimum dose"),
        ("max", "maximum dose"),
        ("d2", "D2%"),
        ("d50", "D50%"),
        ("d95", "D95%"),
        ("d98", "D98%"),
        ("d1cc", "D1cc"),
        ("d0_1cc", "D0.1cc"),
    )
]


DVH_METRICS = TableSchema(
    columns=[
        _COURSE_KEY,
        _ROI,
        _SOURCE,
        TableColumn("method", "string", description="contour (manual ROIs: planes as slabs) or mask (voxel centres)"),
        TableColumn("volume_cc", "float", description="ROI volume (cm³)"),
        _gy("mean_gy", "mean dose"),
        _gy("min_gy", "minimum dose"),
        _gy("max_gy", "maximum dose"),
        _gy("d2_gy", "D2%: minimum dose of the hottest 2 %"),
        _gy("d50_gy", "D50%: median dose"),
        _gy("d95_gy", "D95%: minimum dose of the hottest 95 %"),
        _gy("d98_gy", "D98%: minimum dose of the hottest 98 %"),
        _gy("d1cc_gy", "D1cc: minimum dose of the hottest 1 cm³"),
        _gy("d0_1cc_gy", "D0.1cc: minimum dose of the hottest 0.1 cm³"),
        _gy("rx_gy", "prescription of the course (absent when unknown)"),
        TableColumn(
            "v95pct_rx_pct", "float", description="V95%Rx: % of the volume receiving ≥ 95 % of the prescription"
        ),
        TableColumn("v100pct_rx_pct", "float", description="V100%Rx: % of the volume receiving ≥ the prescription"),
        TableColumn(
            "v<N>gy_pct", "float", description="VN Gy: % of the volume receiving ≥ N Gy, one column per whole Gy"
        ),
    ]
)

#: the cohort's DVH metrics: the course columns, the standard name, and the EQD2 columns beside them
COHORT_DVH_METRICS = TableSchema(
    columns=DVH_METRICS.columns[:3] + [_ROI_STD, _ROI_STD_RULE] + DVH_METRICS.columns[3:] + _EQD2_INFO + _EQD2_METRICS
)

DVH_EQD2 = TableSchema(
    columns=[
        _COURSE_KEY,
        _ROI,
        _SOURCE,
        TableColumn("method", "string", description="contour or mask, as in dvh_metrics"),
        _ROI_STD,
        *_EQD2_INFO,
        *_EQD2_METRICS,
    ]
)


def _suv(name: str, what: str) -> TableColumn:
    return TableColumn(name, "float", description=f"{what} (SUV, g/ml)")


PET_METRICS = TableSchema(
    columns=[
        _COURSE_KEY,
        TableColumn(
            "pet", "string", description="the PET series of the course: pet1, pet2, ... (pet/<label>/info.json)"
        ),
        _ROI,
        _SOURCE,
        _ROI_STD,
        _suv("suv_max", "SUVbw maximum in the ROI, on the PET's own voxels"),
        _suv("suv_mean", "SUVbw mean"),
        _suv("suv_peak", "SUVbw peak: the highest mean in a 1 cm³ sphere centred in the ROI (PERCIST)"),
        _suv("suv_std", "SUVbw standard deviation"),
        TableColumn("mtv40_cc", "float", description="metabolic tumour volume: ROI voxels >= 40 % of SUVmax (cm³)"),
        TableColumn("mtv25_cc", "float", description="metabolic tumour volume: ROI voxels with SUV >= 2.5 (cm³)"),
        TableColumn("tlg40", "float", description="total lesion glycolysis: mtv40_cc x its mean SUV (g)"),
        TableColumn("tlg25", "float", description="total lesion glycolysis: mtv25_cc x its mean SUV (g)"),
        TableColumn("volume_cc", "float", description="the ROI's volume on the PET grid (cm³)"),
        TableColumn("n_voxels", "int", description="the ROI's PET voxels"),
        _suv("suvlbm_max", "SUVlbm maximum (Janmahasatian lean body mass; empty without height and sex)"),
        _suv("suvlbm_mean", "SUVlbm mean"),
        _suv("suvlbm_peak", "SUVlbm peak"),
        TableColumn(
            "in_view_fraction",
            "float",
            description="share of the ROI's volume inside the PET's field of view (the metrics cover that part)",
        ),
    ]
)

AGREEMENT = TableSchema(
    columns=[
        _COURSE_KEY,
        _ROI_STD,
        TableColumn("roi_name_manual", "string", description="the manual ROI's name"),
        TableColumn("roi_name_auto", "string", description="the automatic ROI's name (the model's class)"),
        TableColumn("source_auto", "string", description="the automatic contour's source (totalseg, a model)"),
        TableColumn("dice", "float", description="Dice similarity coefficient"),
        TableColumn("hd95_mm", "float", description="95th percentile Hausdorff distance (mm)"),
        TableColumn("msd_mm", "float", description="mean symmetric surface distance (mm)"),
        TableColumn("hd_max_mm", "float", description="Hausdorff distance (mm)"),
        TableColumn("volume_ratio", "float", description="auto volume / manual volume"),
        TableColumn("manual_cc", "float", description="manual volume (cm³)"),
        TableColumn("auto_cc", "float", description="automatic volume (cm³)"),
        _gy("mean_gy_diff", "Dmean auto - manual"),
        _gy("d2_gy_diff", "D2% auto - manual"),
        TableColumn("note", "string", description="e.g. resampled onto the manual grid"),
    ]
)

UNMAPPED_ROIS = TableSchema(
    columns=[
        _ROI,
        _SOURCE,
        TableColumn("n_courses", "int", description="courses with this name"),
        TableColumn("n_rows", "int", description="rows of the cohort tables with this name"),
        TableColumn("candidates", "string", description="standard names an ambiguous name could be (; separated)"),
        TableColumn("reason", "string", description="why it is unmapped (no rule, ambiguous, empty, not ASCII, ...)"),
    ]
)

RADIOMICS = TableSchema(
    columns=[
        _COURSE_KEY,
        _ROI,
        _SOURCE,
        _ROI_STD,
        TableColumn(
            "<feature>",
            "float",
            description="one column per pyradiomics feature, with pyradiomics' own name "
            "(e.g. original_shape_MeshVolume, original_firstorder_Mean); NaN where not computed",
        ),
    ]
)

ROBUSTNESS = TableSchema(
    columns=[
        TableColumn("feature", "string", description="pyradiomics feature name"),
        TableColumn("icc", "float", description="ICC(1,1) over the perturbations: subjects = (course, ROI)"),
        TableColumn("ci_low", "float", description="lower bound of the ICC's 95 % confidence interval"),
        TableColumn("ci_high", "float", description="upper bound of the ICC's 95 % confidence interval"),
        TableColumn("n_subjects", "int", description="ROIs (course, ROI) with finite values"),
        TableColumn("n_raters", "int", description="perturbations per ROI"),
        TableColumn("robust", "bool", description="ICC at or above the threshold (0.90, Zwanenburg et al. 2019)"),
    ]
)

QC = TableSchema(
    columns=[
        _COURSE_KEY,
        TableColumn("asset", "string", description="the asset whose check this is"),
        TableColumn("check", "string", description="check name (see the asset's checks tab)"),
        TableColumn("passed", "bool", description="True when the check passed; a check that could not run fails"),
        TableColumn("severity", "string", description="ERROR or WARN"),
        TableColumn("description", "string", description="what was found, in words"),
        TableColumn("metadata", "string", description="the check's numbers, as JSON"),
    ]
)

COURSES = TableSchema(
    columns=[
        _COURSE_KEY,
        TableColumn("patient_id", "string", description="PatientID (0010,0020): the key map only, mode 0600"),
        TableColumn("patient_name", "string", description="PatientName (0010,0010): the key map only"),
        TableColumn("ct_study_uid", "string", description="Study Instance UID of the planning CT"),
        TableColumn("ct_series_uid", "string", description="Series Instance UID of the planning CT"),
        TableColumn("frame_of_reference_uid", "string", description="the planning CT's frame of reference"),
        TableColumn("n_ct_slices", "int", description="CT images of the planning series"),
        TableColumn("n_rtstruct", "int", description="RT structure sets linked to the course"),
        TableColumn("n_rtplan", "int", description="RT plans linked to the course"),
        TableColumn("n_rtdose", "int", description="RT doses linked to the course"),
        TableColumn("n_reg", "int", description="spatial registrations linked to the course"),
        TableColumn("n_files", "int", description="source files of the course"),
        TableColumn("fingerprint", "string", description="sha256 over the course's files: changes when any does"),
        TableColumn("notes", "string", description="linker notes"),
    ]
)

INGEST_REPORT = TableSchema(
    columns=[
        TableColumn("file_id", "string", description="f- + HMAC of the drop-relative path: how the UI names the file"),
        TableColumn("path", "string", description="drop-relative path (in the parquet file only, never in the UI)"),
        TableColumn("reason", "string", description="why the file is not used, in words"),
        TableColumn("kind", "string", description="CT, RTPLAN, ... when the file was DICOM the pipeline reads"),
        TableColumn("course_key", "string", description="the course that refused it; empty: refused by the linker"),
        TableColumn("stage", "string", description="the asset that refused it; empty: the linker"),
    ]
)

AUDIT = TableSchema(
    columns=[
        TableColumn("event", "string", description="materialization or check"),
        TableColumn("event_id", "int", description="Dagster event log storage id (orders the ledger)"),
        TableColumn("timestamp", "string", description="UTC, ISO 8601"),
        TableColumn("asset", "string", description="asset key"),
        _COURSE_KEY,
        TableColumn("run_id", "string", description="the Dagster run"),
        TableColumn("check", "string", description="check name (check events)"),
        TableColumn("passed", "bool", description="check outcome (check events)"),
        TableColumn("severity", "string", description="ERROR or WARN (check events)"),
        TableColumn("description", "string", description="check description (check events)"),
        TableColumn("code_version", "string", description="the asset's code version"),
        TableColumn("data_version", "string", description="content hash of the output"),
        TableColumn("inputs", "string", description="the upstream materializations used, as JSON"),
        TableColumn("lineage", "string", description="source UIDs, input sha256, tool versions, settings, as JSON"),
    ]
)


def schema_metadata(schema: TableSchema) -> dict:
    """Definition metadata: the table's column schema."""
    return {"dagster/column_schema": schema}


def row_count(n: int) -> dict:
    """Materialization metadata: the number of rows written."""
    return {"dagster/row_count": int(n)}
