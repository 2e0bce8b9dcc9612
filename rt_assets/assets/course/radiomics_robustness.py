from dagster import AssetExecutionContext, AssetsDefinition, MaterializeResult, MetadataValue, asset

from rt_assets.constants import GPU_STEP_TAGS
from rt_assets.course_inputs import course_paths, open_course
from rt_assets.gpu_pool import leased_gpu_step
from rt_assets.lineage import content_version, lineage_metadata, record_skip
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_assets.table_schemas import ROBUSTNESS, row_count, schema_metadata
from rt_resources.course_paths import MANUAL
from rt_resources.fileio import write_parquet_atomic
from rt_resources.provenance import sha256_file
from rt_resources.radiomics.course import params_sha256, robustness_rois
from rt_resources.radiomics.robustness import ICC_FORM, feature_icc, perturbed_features
from rt_resources.resources import DataRoot, RadiomicsConfig, RobustnessConfig


def radiomics_robustness_asset(pool: str | None = None) -> AssetsDefinition:
    """The ``radiomics_robustness`` asset; with ``pool`` as in :func:`..radiomics.radiomics_asset`."""

    @asset(
        name="radiomics_robustness",
        partitions_def=course_partitions,
        pool=pool,
        op_tags=GPU_STEP_TAGS if pool else None,
        deps=["ct_image", "structure_masks"],
        code_version="1",
        kinds={"parquet"},
        output_required=False,
        metadata=schema_metadata(ROBUSTNESS),
    )
    @private
    def _radiomics_robustness(
        context: AssetExecutionContext,
        data_root: DataRoot,
        radiomics_config: RadiomicsConfig,
        robustness_config: RobustnessConfig,
    ):
        """Which radiomic features are stable (opt-in: radiomics.robustness N, --radiomics-robustness N):
        every manual ROI of the course extracted N times, each after a random chain of perturbations of
        image and mask after Zwanenburg et al. 2019 (noise, translation, rotation, volume adaptation,
        contour randomisation; rt_resources/radiomics/robustness.py), with the course's parameters and
        backend; then an ICC(1,1) per feature with its 95 % CI, each ROI a subject and each perturbation
        a rater (courses/<key>/radiomics_robustness.parquet; the features per perturbation in
        radiomics_perturbations.parquet, which cohort_radiomics_robustness pools over the cohort).
        Features with ICC >= the threshold (0.90) are flagged robust. Very large ROIs (BODY: the light
        parameters) and skipped ones are left out; a course needs two ROIs for an ICC."""
        n = robustness_config.perturbations
        if n < 2:
            why = "radiomics robustness is off (radiomics.robustness / --radiomics-robustness N, N >= 2)"
            record_skip(context, why, settings_keys=["robustness_config"])  # other settings don't matter then
            return
        paths = course_paths(context, data_root)
        settings = radiomics_config.settings()
        masks, left_out = robustness_rois(paths.masks(MANUAL), settings)
        if len(masks) < 2:
            record_skip(context, f"{len(masks)} usable manual ROI(s): an ICC needs two subjects at least")
            return
        course = open_course(context, data_root)
        workers = radiomics_config.worker_count()
        with leased_gpu_step(context, data_root, settings.backend, pool) as device_metadata:
            perturbed, failures = perturbed_features(
                paths.ct, masks, settings, n, robustness_config.seed, course_key=course.key, source=MANUAL,
                workers=workers, sequential=radiomics_config.sequential,
            )  # fmt: skip
        if perturbed.empty:
            raise course.fail("every perturbation failed", metadata={"failures": MetadataValue.json(failures)})
        icc = feature_icc(perturbed, robustness_config.threshold)
        write_parquet_atomic(paths.radiomics_perturbations, perturbed)
        path = write_parquet_atomic(paths.radiomics_robustness, icc)
        robust = icc[icc["robust"]]
        yield MaterializeResult(
            data_version=content_version(path, paths.radiomics_perturbations),
            metadata={
                "path": MetadataValue.path(str(path)),
                **row_count(len(icc)),
                "n_rois": len(masks),
                "n_perturbations": n,
                "icc_form": ICC_FORM,
                "threshold": robustness_config.threshold,
                "n_robust": len(robust),
                "share_robust": round(len(robust) / len(icc), 3) if len(icc) else 0.0,
                "least_robust": MetadataValue.md(
                    icc.sort_values("icc").head(10)[["feature", "icc", "ci_low", "ci_high"]].to_markdown(index=False)
                ),
                "left_out": MetadataValue.json(left_out),
                "failures": MetadataValue.json(failures),
                **device_metadata,
                **lineage_metadata(
                    context,
                    source_uids={"ct_series_uid": course.manifest.ct_series_uid},
                    input_sha256={"ct.nii.gz": sha256_file(paths.ct), "params": params_sha256(settings)},
                    extra_tools=("pyradiomics-bhklab", "pingouin"),
                ),
            },
        )

    return _radiomics_robustness


radiomics_robustness = radiomics_robustness_asset()
