"""The one Definitions object of the project (workspace.yaml loads ``defs``)."""

from __future__ import annotations

from dagster import AssetsDefinition, AssetSpec, Definitions, ExecutorDefinition, load_assets_from_package_module

from rt_assets.assets import cohort, course, derived, segmentation
from rt_assets.assets.segmentation.nnunet_models import nnunet_model_asset
from rt_assets.config import current_settings
from rt_assets.constants import (
    COHORT_GROUP,
    COURSE_GROUP,
    DERIVED_GROUP,
    GPU_POOL,
    SEGMENTATION_GROUP,
    TOTALSEG_ASSETS,
)
from rt_assets.executors import step_executor
from rt_assets.jobs import cohort_job, course_job, derived_job, segmentation_job
from rt_assets.sensors.automation import automation_sensors
from rt_assets.sensors.cohort_sensor import cohort_sensor
from rt_assets.sensors.dicom_drop_sensor import dicom_drop_sensor
from rt_resources.resources import resources_from_settings
from rt_resources.segmentation.availability import SegmentationAvailability, segmentation_availability
from rt_resources.settings import Settings


def _unavailable(availability: SegmentationAvailability):
    """Mark TotalSegmentator's asset as not runnable here: no automation, and the reason shown once
    on the asset (description and definition metadata) instead of a failed run per course."""

    def mark(spec: AssetSpec) -> AssetSpec:
        if spec.key.to_user_string() not in TOTALSEG_ASSETS or availability.totalseg_ready:
            return spec
        note = f"**Not available on this installation**: {availability.totalseg_detail}\n\n"
        return spec.replace_attributes(
            automation_condition=None, description=note + (spec.description or "")
        ).merge_attributes(metadata={"availability": f"not available: {availability.totalseg_detail}"})

    return mark


def _without_rules(spec: AssetSpec) -> AssetSpec:
    """No custom-structure rules configured: custom_structures would only record a skip per
    course, so it is not automated (it stays materializable, and says why when run)."""
    if spec.key.to_user_string() != "custom_structures":
        return spec
    return spec.replace_attributes(automation_condition=None)


def _marked(assets: list, mark) -> list:
    return [a.map_asset_specs(mark) if isinstance(a, AssetsDefinition) else a for a in assets]


def derived_assets(settings: Settings, availability: SegmentationAvailability) -> list:
    assets = _marked(load_assets_from_package_module(derived, group_name=DERIVED_GROUP), _unavailable(availability))
    if settings.segmentation.custom_structures:
        return assets
    return _marked(assets, _without_rules)


def radiomics_uses_gpu(settings: Settings) -> bool:
    """fastrad on a CUDA device: the radiomics steps then take a slot of the GPU pool."""
    backend = settings.radiomics.backend
    if backend == "pyradiomics":
        return False
    from rt_resources.radiomics.backends import cuda_available

    return cuda_available()


def course_assets(settings: Settings, availability: SegmentationAvailability) -> list:
    """The course group; the radiomics assets in the GPU pool when they run on the GPU."""
    assets = _marked(load_assets_from_package_module(course, group_name=COURSE_GROUP), _unavailable(availability))
    if not radiomics_uses_gpu(settings):
        return assets
    from rt_assets.assets.course.radiomics import radiomics_asset
    from rt_assets.assets.course.radiomics_robustness import radiomics_robustness_asset

    gpu = {"radiomics": radiomics_asset(GPU_POOL), "radiomics_robustness": radiomics_robustness_asset(GPU_POOL)}
    gpu = {name: a.with_attributes(group_names_by_key={a.key: COURSE_GROUP}) for name, a in gpu.items()}
    return [
        gpu.get(a.key.to_user_string(), a) if isinstance(a, AssetsDefinition) and len(a.keys) == 1 else a
        for a in assets
    ]


def segmentation_assets(settings: Settings) -> tuple[list[AssetsDefinition], SegmentationAvailability]:
    """TotalSegmentator's asset (marked unavailable without weights) and one asset per custom model."""
    availability = segmentation_availability(settings)
    assets = _marked(
        load_assets_from_package_module(segmentation, group_name=SEGMENTATION_GROUP), _unavailable(availability)
    )
    return assets + [nnunet_model_asset(m) for m in availability.models], availability


def build_definitions(settings: Settings | None = None, executor: ExecutorDefinition | None = None) -> Definitions:
    """Assets by group, jobs, sensors and resources from ``settings`` (default: this process's);
    ``executor`` defaults to the settings' step executor (multiprocess, (CPU cores - 1) workers)."""
    settings = settings or current_settings()
    seg_assets, availability = segmentation_assets(settings)
    return Definitions(
        assets=[
            *course_assets(settings, availability),
            *seg_assets,
            *derived_assets(settings, availability),
            *load_assets_from_package_module(cohort, group_name=COHORT_GROUP),
        ],
        jobs=[course_job, segmentation_job, derived_job, cohort_job],
        sensors=[
            dicom_drop_sensor,
            cohort_sensor,
            *automation_sensors(settings.sensor_interval_s, availability.available_assets()),
        ],
        resources=resources_from_settings(settings),
        executor=executor or step_executor(settings),
    )


defs = build_definitions()
