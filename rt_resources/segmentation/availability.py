"""Which segmentations this installation can run, decided once from the settings.

Without TotalSegmentator weights (an ordinary install: they cannot be downloaded here) no
segmentation run is launched from any path: the asset graph says why once, on the asset, instead
of one failed run per course. Custom nnU-Net models are available when their folders are.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rt_resources.segmentation.nnunet_models import NnUNetModel, discover_models
from rt_resources.settings import Settings


@dataclass(frozen=True)
class SegmentationAvailability:
    totalseg_ready: bool
    totalseg_detail: str  #: the checkpoint found, or why TotalSegmentator cannot run
    models: tuple[NnUNetModel, ...] = ()

    @property
    def any(self) -> bool:
        return self.totalseg_ready or bool(self.models)

    def available_assets(self) -> list[str]:
        """Names of the segmentation (GPU) assets that can run here."""
        return (["totalseg_inference"] if self.totalseg_ready else []) + [f"nnunet_{m.name}" for m in self.models]


def totalseg_home(settings: Settings) -> Path:
    return Path(settings.totalsegmentator.home) if settings.totalsegmentator.home else Path.home() / ".totalsegmentator"


def segmentation_availability(settings: Settings) -> SegmentationAvailability:
    """TotalSegmentator is ready when the checkpoints of its task are on disk; custom models when
    ``segmentation.models_dir`` holds valid model folders (a bad one raises ModelError)."""
    from rt_resources.segmentation.totalseg import TotalSegSettings, WeightsMissing, check_ready

    ts = settings.totalsegmentator
    try:
        checkpoint = check_ready(
            TotalSegSettings(home=totalseg_home(settings), task=ts.task, fast=ts.fast, backend=ts.backend)
        )
        ready, detail = True, str(checkpoint)
    except WeightsMissing as exc:
        ready, detail = False, str(exc)
    models_dir = settings.segmentation.models_dir
    models = tuple(discover_models(Path(models_dir))) if models_dir else ()
    return SegmentationAvailability(ready, detail, models)
