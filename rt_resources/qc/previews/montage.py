"""The CT montage of a course: axial, coronal and sagittal planes through the target, as one PNG.

A recipe in named steps: read the CT (reoriented to LPS), the masks and the dose
(:mod:`~rt_resources.qc.previews.overlays`); choose the centre and the planes
(:mod:`~rt_resources.qc.previews.plane`, which also states the display conventions); draw the
planes and their overlays; render, measure where each panel landed, write the PNG.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rt_resources.qc.previews.overlays import (
    CT_WINDOW_HU,
    DoseWash,
    dose_wash,
    draw_dose_bar,
    draw_legend,
    draw_outlines,
    draw_plane,
    keep_image_limits,
    read_dose,
    read_masks,
)
from rt_resources.qc.previews.plane import Plane, centre_index, choose_centre, planes_through, read_3d
from rt_resources.qc.previews.render import DPI, render_rgb, short_label, write_png

MONTAGE_SIZE_IN = (15.0, 5.5)


def ct_montage_png(
    ct_path: Path,
    out_png: Path,
    *,
    manual_masks_dir: Path | None = None,
    auto_masks_dirs: dict[str, Path] | None = None,
    dose_path: Path | None = None,
    target_hint: str | None = None,
    prescription_gy: float | None = None,
    wash_label: str = "Dose (Gy)",
) -> dict:
    """Axial, coronal and sagittal planes through the target centre, as one PNG.

    The centre is the centroid of the first non-empty manual mask whose ROI name is
    ``target_hint`` or contains PTV, CTV or GTV (in that order; ``rois.json`` order within
    a class), else the dose maximum, else the image centre. The CT is shown in a W400/L40
    window; manual ROIs as solid outlines, ROIs of other sources (``auto_masks_dirs``:
    source -> folder) as thin dashed outlines; the dose as a turbo colour wash, hidden
    below 10 % of the prescription (or of the maximum). Masks and dose on other grids are
    resampled onto the CT (nearest neighbour / linear). Any other volume on the CT's frame of
    reference can take the dose's place (a PET fusion: SUV, ``wash_label`` its colour bar's label).

    Returns ``path``, ``centre_mm`` (LPS), ``centre_from`` (the ROI name, ``"dose max"`` or
    ``"image centre"``), ``n_contours`` (ROI outlines drawn: (ROI, source) pairs seen in at
    least one plane), ``width_px``, ``height_px``, and for inspection ``rois_shown``,
    ``dose_max_gy``, ``notes`` and ``panels`` (per plane: slice ``index``, ``centre_px``, the
    target centre's (column, row) pixel in the PNG, and ``bbox_px``, the image's (left, top,
    right, bottom) pixels).
    """
    import SimpleITK as sitk

    notes: list[str] = []
    ct = read_3d(ct_path, sitk.sitkFloat32, orient=True)
    manual = read_masks(manual_masks_dir, "manual", notes)
    auto = [m for source, folder in (auto_masks_dirs or {}).items() for m in read_masks(folder, source, notes)]
    dose, dose_max = read_dose(dose_path, notes)

    centre, centre_from = choose_centre(ct, manual, dose, target_hint)
    planes = planes_through(ct, centre_index(ct, centre, notes))

    wash = dose_wash(dose, dose_max, prescription_gy)
    fig, axes, colour_of = _draw(planes, manual + auto, wash, prescription_gy, centre_from, wash_label)
    rgb = render_rgb(fig)
    height_px, width_px = rgb.shape[:2]
    panels = _panels(ct, centre, planes, axes, height_px)
    write_png(rgb, out_png)
    return {
        "path": str(out_png),
        "centre_mm": [round(v, 3) for v in centre],
        "centre_from": centre_from,
        "n_contours": len(colour_of),
        "width_px": int(width_px),
        "height_px": int(height_px),
        "rois_shown": [f"{source}/{roi}" for roi, source in colour_of],
        "dose_max_gy": round(dose_max, 4) if dose is not None else None,
        "panels": panels,
        "notes": notes,
    }


def _draw(
    planes: list[Plane],
    masks: list[tuple[str, str, Any]],
    wash: DoseWash | None,
    prescription_gy: float | None,
    centre_from: str,
    wash_label: str = "Dose (Gy)",
):
    """The montage figure: the planes side by side, outlines, legend, dose bar and title.

    Returns the figure, its plane axes and the colour of each ``(roi, source)`` drawn."""
    from matplotlib.figure import Figure

    width, level = CT_WINDOW_HU
    fig = Figure(figsize=MONTAGE_SIZE_IN, dpi=DPI, facecolor="white")
    axes = []
    for p, plane in enumerate(planes):
        ax = fig.add_axes((0.005 + p * 0.26, 0.03, 0.255, 0.86))
        draw_plane(ax, plane, wash)
        axes.append(ax)
    colour_of, legend = draw_outlines(planes, axes, masks)
    keep_image_limits(planes, axes)
    if legend:
        draw_legend(fig, legend)
    if wash is not None:
        draw_dose_bar(fig, wash, prescription_gy, wash_label)
    fig.suptitle(f"CT W{width:g}/L{level:g}   centre: {short_label(centre_from, 40)}", fontsize=10, x=0.4, y=0.985)
    return fig, axes, colour_of


def _panels(ct, centre: tuple[float, float, float], planes: list[Plane], axes: list, height_px: int) -> dict:
    """Per plane, where it landed in the rendered PNG: slice ``index``, the centre's ``centre_px``
    (column, row) and the image's ``bbox_px`` (left, top, right, bottom)."""
    panels = {}
    c = ct.TransformPhysicalPointToContinuousIndex(centre)
    for plane, ax in zip(planes, axes, strict=True):
        col, row = {"axial": (c[0], c[1]), "coronal": (c[0], c[2]), "sagittal": (c[1], c[2])}[plane.name]
        x_disp, y_disp = ax.transData.transform((col, row))
        box = ax.get_window_extent()
        panels[plane.name] = {
            "index": plane.index,
            "centre_px": [int(round(x_disp)), int(round(height_px - y_disp))],
            "bbox_px": [
                int(round(box.x0)),
                int(round(height_px - box.y1)),
                int(round(box.x1)),
                int(round(height_px - box.y0)),
            ],
        }
    return panels
