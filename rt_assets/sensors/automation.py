"""Declarative automation (runs in the daemon, on by default).

Two sensors, so that the runs they start carry the right tags: segmentation runs are tagged
rt/gpu=true, which dagster.yaml limits to one at a time; everything else (crops, custom
structures, the DVH with auto structures, cohort tables) runs untagged, in parallel.
"""

import os

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from rt_assets.constants import SEGMENTATION_GROUP, TAG_GPU

INTERVAL_S = int(os.environ.get("RT_SENSOR_INTERVAL_S", "30"))

segmentation_automation_sensor = AutomationConditionSensorDefinition(
    "segmentation_automation_sensor",
    target=AssetSelection.groups(SEGMENTATION_GROUP),
    run_tags={TAG_GPU: "true"},
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL_S,
    description="Segments each course once its CT volume exists (GPU runs, one at a time).",
)

automation_sensor = AutomationConditionSensorDefinition(
    "automation_sensor",
    target=AssetSelection.all() - AssetSelection.groups(SEGMENTATION_GROUP),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=INTERVAL_S,
    description="Crops, custom structures and DVHs after segmentation; cohort tables after course updates.",
)
