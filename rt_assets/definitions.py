"""The one Definitions object of the project (workspace.yaml loads ``defs``)."""

from __future__ import annotations

from dagster import Definitions, ExecutorDefinition, load_assets_from_package_module

from rt_assets.assets import cohort, course, derived, segmentation
from rt_assets.assets.segmentation.nnunet_models import model_assets_from_env
from rt_assets.constants import COHORT_GROUP, COURSE_GROUP, DERIVED_GROUP, SEGMENTATION_GROUP
from rt_assets.executors import step_executor
from rt_assets.jobs import cohort_job, course_job, derived_job, segmentation_job
from rt_assets.sensors.automation import automation_sensor, segmentation_automation_sensor
from rt_assets.sensors.dicom_drop_sensor import dicom_drop_sensor
from rt_resources.resources import resources_from_env


def build_definitions(executor: ExecutorDefinition | None = None) -> Definitions:
    """Assets by group, jobs, sensors and the local resources; ``executor`` defaults to
    the multiprocess executor with (CPU cores - 1) workers."""
    return Definitions(
        assets=[
            *load_assets_from_package_module(course, group_name=COURSE_GROUP),
            *load_assets_from_package_module(segmentation, group_name=SEGMENTATION_GROUP),
            *model_assets_from_env(),
            *load_assets_from_package_module(derived, group_name=DERIVED_GROUP),
            *load_assets_from_package_module(cohort, group_name=COHORT_GROUP),
        ],
        jobs=[course_job, segmentation_job, derived_job, cohort_job],
        sensors=[dicom_drop_sensor, segmentation_automation_sensor, automation_sensor],
        resources=resources_from_env(),
        executor=executor or step_executor(),
    )


defs = build_definitions()
