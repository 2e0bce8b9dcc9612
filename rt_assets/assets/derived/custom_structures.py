from pathlib import Path

from dagster import AssetExecutionContext, Failure, MaterializeResult, MetadataValue, asset

from rt_assets.automation import after_updates
from rt_assets.course_inputs import course_paths
from rt_assets.lineage import content_version, lineage_metadata
from rt_assets.partitions import course_partitions
from rt_assets.privacy import private
from rt_resources.course_paths import CUSTOM
from rt_resources.fileio import replace_dir_atomic, write_json_atomic
from rt_resources.provenance import sha256_file
from rt_resources.resources import DataRoot, SegmentationConfig
from rt_resources.structures.custom import build_all, load_custom_structures
from rt_resources.structures.masks import ROI_INDEX_FILE


@asset(
    partitions_def=course_partitions,
    deps=["structure_masks", "totalseg_masks"],
    code_version="2",
    kinds={"nifti"},
    automation_condition=after_updates(required=["structure_masks"]),
)
@private
def custom_structures(context: AssetExecutionContext, data_root: DataRoot, segmentation_config: SegmentationConfig):
    """Boolean combinations (union, intersection, subtract, xor) of manual and auto structures,
    with isotropic or per-direction margins in mm, from the YAML file $RT_CUSTOM_STRUCTURES
    (courses/<key>/masks/custom/<name>.nii.gz); they get DVHs like every mask source. A rule
    whose inputs are missing is skipped with the reason. Without a rule file the course has no
    custom structures: an empty folder is materialized (``rules: none``), never a skip, because
    Dagster skips every step downstream of an output that was not materialized, and the DVH,
    radiomics and preview of the automatic organs in the same run would be lost with it."""
    rules = segmentation_config.custom_structures
    paths = course_paths(context, data_root)
    folder = paths.masks(CUSTOM)
    if not rules:
        replace_dir_atomic(folder, lambda tmp: write_json_atomic(tmp / ROI_INDEX_FILE, []))
        return MaterializeResult(
            data_version=content_version(folder),
            metadata={
                "path": MetadataValue.path(str(folder)),
                "rules": "none configured (RT_CUSTOM_STRUCTURES, --custom-structures)",
                "structures": MetadataValue.json([]),
                **lineage_metadata(context, source_uids={}, input_sha256={}),
            },
        )
    try:
        specs = load_custom_structures(Path(rules))
    except (OSError, ValueError) as exc:
        raise Failure(description=f"custom structure rules {rules}: {exc}") from exc

    def write(folder: Path) -> list[dict]:
        records = build_all(specs, paths.masks_root, folder)
        index = [{"roi_name": r["name"], "file": f"{r['name']}.nii.gz"} for r in records if r.get("voxels")]
        write_json_atomic(folder / ROI_INDEX_FILE, index)
        return records

    records = replace_dir_atomic(folder, write)
    return MaterializeResult(
        data_version=content_version(folder),
        metadata={
            "path": MetadataValue.path(str(folder)),
            "structures": MetadataValue.json(records),
            **lineage_metadata(
                context,
                source_uids={"rules": str(rules)},
                input_sha256={"rules": sha256_file(rules)},
            ),
        },
    )
