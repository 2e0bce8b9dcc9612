"""What a CT montage draws on each plane, and the masks and dose it reads for that.

The CT in a soft-tissue window (W400/L40); the dose as a turbo colour wash, hidden below 10 %
of the prescription (or of the maximum); manual ROIs as solid outlines and ROIs of other
sources as thin dashed ones (masks resampled onto the plane by nearest neighbour, the dose
linearly); orientation letters at the plane's edges; beside the planes, the legend of the
outlines drawn and the dose colour bar with the prescription marked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rt_resources.qc.previews.plane import Plane, array_view, read_3d
from rt_resources.qc.previews.render import OUTLINE_COLOURS, short_label
from rt_resources.structures.masks import mask_index

#: CT display window (width, level) in HU: soft tissue
CT_WINDOW_HU = (400.0, 40.0)
DOSE_ALPHA = 0.35
#: dose below this fraction of the prescription (or of the maximum) is not washed
DOSE_FLOOR = 0.10
MAX_MONTAGE_LEGEND = 12
#: where the orientation letters (top, bottom, left, right) sit, in axes fractions
_LABEL_SPOTS = (
    (0.5, 0.99, "center", "top"),
    (0.5, 0.01, "center", "bottom"),
    (0.01, 0.5, "left", "center"),
    (0.99, 0.5, "right", "center"),
)

# ---------------------------------------------------------------- reading what is drawn


def list_masks(folder: Path) -> list[tuple[str, Path]]:
    """``(roi_name, path)`` of every mask in ``folder``: ``rois.json`` order, then unlisted files by name."""
    return [(r["roi_name"], r["path"]) for r in mask_index(folder)] if Path(folder).is_dir() else []


def read_masks(folder: Path | None, source: str, notes: list[str]) -> list[tuple[str, str, Any]]:
    """``(roi, source, image)`` of the masks in ``folder``; an unreadable file is skipped with a note."""
    out = []
    for roi, path in list_masks(folder) if folder else []:
        try:
            out.append((roi, source, read_3d(path)))
        except (RuntimeError, ValueError) as exc:
            notes.append(f"{source}/{path.name}: unreadable ({str(exc).strip().splitlines()[0][:120]})")
    return out


def read_dose(dose_path: Path | None, notes: list[str]) -> tuple[Any | None, float]:
    """The dose image and its maximum (Gy); no image (with a note) when the file is missing or
    the dose is zero everywhere."""
    import SimpleITK as sitk

    dose = None
    dose_max = 0.0
    if dose_path is not None and Path(dose_path).is_file():
        dose = read_3d(dose_path, sitk.sitkFloat32)
        dose_arr = array_view(dose)
        dose_max = float(dose_arr.max()) if dose_arr.size else 0.0
        if not np.isfinite(dose_max) or dose_max <= 0:
            notes.append("dose is zero everywhere: no dose wash")
            dose = None
    elif dose_path is not None:
        notes.append("no dose file")
    return dose, dose_max


# ---------------------------------------------------------------- drawing


@dataclass(frozen=True)
class DoseWash:
    """The dose shown as colours from 0 Gy to its maximum, transparent below ``floor_gy``."""

    image: Any  # SimpleITK.Image
    max_gy: float
    floor_gy: float
    norm: Any  # matplotlib Normalize, shared by the planes and the colour bar
    cmap: Any


def dose_wash(dose, dose_max: float, prescription_gy: float | None) -> DoseWash | None:
    """How ``dose`` is washed over the planes (None without a dose)."""
    from matplotlib import colormaps
    from matplotlib.colors import Normalize

    if dose is None:
        return None
    floor = DOSE_FLOOR * (prescription_gy if prescription_gy else dose_max)
    return DoseWash(dose, dose_max, floor, Normalize(0.0, max(dose_max, 1e-6)), colormaps["turbo"])


def draw_plane(ax, plane: Plane, wash: DoseWash | None) -> None:
    """The CT of ``plane`` in its window, the dose wash over it, its title and orientation letters."""
    import SimpleITK as sitk

    width, level = CT_WINDOW_HU
    ax.set_axis_off()
    ax.imshow(
        plane.image,
        cmap="gray",
        vmin=level - width / 2,
        vmax=level + width / 2,
        aspect=plane.aspect,
        origin=plane.origin,
        interpolation="bilinear",
    )
    if wash is not None:
        d = plane.sample(wash.image, sitk.sitkLinear, sitk.sitkFloat32)
        ax.imshow(
            np.ma.masked_less(d, wash.floor_gy),
            cmap=wash.cmap,
            norm=wash.norm,
            alpha=DOSE_ALPHA,
            aspect=plane.aspect,
            origin=plane.origin,
            interpolation="nearest",
        )
    ax.set_title(plane.title, fontsize=10)
    rows, cols = plane.image.shape
    thin = rows * plane.aspect < 0.15 * cols  # a strip (few slices): no room for top and bottom letters
    for text, (x, y, ha, va) in list(zip(plane.labels, _LABEL_SPOTS, strict=True))[2 if thin else 0 :]:
        ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=9, fontweight="bold")


def outlines(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (rows, cols) of a 2-D mask; padding closes the ones that touch the edge."""
    from skimage.measure import find_contours

    if not mask2d.any():
        return []
    padded = np.pad(mask2d > 0, 1).astype(np.float32)
    return [c - 1.0 for c in find_contours(padded, 0.5)]


def draw_outlines(
    planes: list[Plane], axes: list, masks: list[tuple[str, str, Any]]
) -> tuple[dict[tuple[str, str], str], list[tuple[str, str, str]]]:
    """Each mask's outlines on every plane, one colour per mask: manual solid, other sources dashed.

    Returns the colour of each ``(roi, source)`` seen in at least one plane, and the legend
    entries ``(label, colour, linestyle)`` of those.
    """
    import SimpleITK as sitk

    colour_of: dict[tuple[str, str], str] = {}
    legend: list[tuple[str, str, str]] = []  # label, colour, linestyle
    for n, (roi, source, image) in enumerate(masks):
        drawn = False
        is_manual = source == "manual"
        colour = OUTLINE_COLOURS[n % len(OUTLINE_COLOURS)]
        for plane, ax in zip(planes, axes, strict=True):
            for line in outlines(plane.sample(image, sitk.sitkNearestNeighbor, image.GetPixelID())):
                ax.plot(
                    line[:, 1],
                    line[:, 0],
                    color=colour,
                    linewidth=1.4 if is_manual else 0.8,
                    linestyle="-" if is_manual else (0, (3, 2)),
                )
                drawn = True
        if drawn:
            colour_of[(roi, source)] = colour
            legend.append((short_label(roi if is_manual else f"{roi} ({source})"), colour, "-" if is_manual else "--"))
    return colour_of, legend


def keep_image_limits(planes: list[Plane], axes: list) -> None:
    """Reset each axes to its image's extent: plotting outlines must not widen it."""
    for plane, ax in zip(planes, axes, strict=True):
        rows, cols = plane.image.shape
        ax.set_xlim(-0.5, cols - 0.5)
        ax.set_ylim((rows - 0.5, -0.5) if plane.origin == "upper" else (-0.5, rows - 0.5))


def draw_legend(fig, legend: list[tuple[str, str, str]]) -> None:
    """The outlines' legend right of the planes, at most :data:`MAX_MONTAGE_LEGEND` entries and "+N more"."""
    from matplotlib.lines import Line2D

    shown = legend[:MAX_MONTAGE_LEGEND]
    handles = [Line2D([], [], color=c, linestyle=ls, linewidth=1.5) for _, c, ls in shown]
    labels = [label for label, _, _ in shown]
    if len(legend) > len(shown):
        handles.append(Line2D([], [], alpha=0.0))
        labels.append(f"+{len(legend) - len(shown)} more")
    fig.legend(
        handles, labels, loc="upper left", bbox_to_anchor=(0.845, 0.9), fontsize=8, frameon=False, handlelength=2.2
    )


def draw_dose_bar(fig, wash: DoseWash, prescription_gy: float | None, label: str = "Dose (Gy)") -> None:
    """The dose colour bar beside the planes, the prescription marked when within the scale (``label``:
    what the wash shows, e.g. SUV for a PET fusion)."""
    from matplotlib.cm import ScalarMappable

    cax = fig.add_axes((0.795, 0.12, 0.01, 0.68))
    bar = fig.colorbar(ScalarMappable(norm=wash.norm, cmap=wash.cmap), cax=cax)
    bar.set_label(label, fontsize=9)
    bar.ax.tick_params(labelsize=8)
    if prescription_gy and prescription_gy <= wash.max_gy:
        bar.ax.axhline(prescription_gy, color="black", linewidth=1.2)
