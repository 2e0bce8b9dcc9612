"""Declarative automation of the cohort tables (runs in the daemon, on by default)."""

import os

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from rt_assets.constants import COHORT_GROUP

cohort_automation_sensor = AutomationConditionSensorDefinition(
    "cohort_automation_sensor",
    target=AssetSelection.groups(COHORT_GROUP),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=int(os.environ.get("RT_SENSOR_INTERVAL_S", "30")),
    description="Rebuilds cohort tables whose automation condition holds (cohort_dvh_metrics after course DVHs).",
)
