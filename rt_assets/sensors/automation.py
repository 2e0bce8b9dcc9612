"""Declarative automation (runs in the daemon, on by default).

Two sensors, so that the runs they start carry the right tags: segmentation runs are tagged
rt/gpu=true, which dagster.yaml limits to the GPU slots (one inferring, one waiting with its input
ready); everything else (masks, RTSTRUCT, crops, custom structures, the DVH, radiomics and
previews with the automatic organs, cohort tables) runs tagged rt/stage=derived, at most two at
once, so the runs that feed the GPU always find a slot. Only the segmentation assets this
installation can run are targeted (no weights: no segmentation run).
"""

from dagster import AssetSelection, AutomationConditionSensorDefinition, DefaultSensorStatus

from rt_assets.constants import SEGMENTATION_GROUP, TAG_GPU, TAG_STAGE


def automation_sensors(interval_s: int, segmentation_assets: list[str]) -> list[AutomationConditionSensorDefinition]:
    """The automation sensors; ``segmentation_assets``: the segmentation assets that can run here."""
    sensors = [
        AutomationConditionSensorDefinition(
            "automation_sensor",
            target=AssetSelection.all() - AssetSelection.groups(SEGMENTATION_GROUP),
            run_tags={TAG_STAGE: "derived"},  # dagster.yaml keeps run slots free of them for the GPU's feeders
            # evaluated in the code location: the derived tables' condition has a Python part
            # (rt_assets.automation.SawLatestUpdates) that the daemon cannot deserialize
            use_user_code_server=True,
            default_status=DefaultSensorStatus.RUNNING,
            minimum_interval_seconds=interval_s,
            description="Crops, custom structures and DVHs after segmentation; cohort tables after course updates.",
        )
    ]
    if segmentation_assets:
        sensors.append(
            AutomationConditionSensorDefinition(
                "segmentation_automation_sensor",
                target=AssetSelection.assets(*segmentation_assets),
                run_tags={TAG_GPU: "true"},
                default_status=DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=interval_s,
                description="Segments each course once its CT volume exists (GPU runs, one at a time).",
            )
        )
    return sensors
