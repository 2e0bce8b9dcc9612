"""The DVH plot of a course: cumulative DVHs of every ROI and source, as one PNG."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from rt_resources.qc.previews.render import DPI, OUTLINE_COLOURS, render_rgb, short_label, write_png

if TYPE_CHECKING:
    import pandas as pd

DVH_SIZE_IN = (10.0, 5.5)
MAX_DVH_LEGEND = 20


def dvh_plot_png(
    curves: pd.DataFrame, out_png: Path, *, prescription_gy: float | None = None, title: str | None = None
) -> dict:
    """Cumulative DVHs (volume % against dose in Gy), one line per (roi_name, source).

    Manual ROIs are solid lines, other sources dashed in the colour of the same ROI name;
    a dotted vertical line marks the prescription. With many curves the legend sits beside
    the plot and lists at most 20. Empty ``curves`` give a figure saying "no DVH".
    Returns ``path``, ``n_curves``, ``width_px``, ``height_px``.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=DVH_SIZE_IN, dpi=DPI, facecolor="white")
    ok = curves is not None and len(curves) and {"roi_name", "dose_gy", "volume_pct"} <= set(curves.columns)
    n_curves = _draw_curves(fig, curves, prescription_gy, title) if ok else _draw_no_dvh(fig, title)
    rgb = render_rgb(fig)
    write_png(rgb, out_png)
    return {"path": str(out_png), "n_curves": n_curves, "width_px": int(rgb.shape[1]), "height_px": int(rgb.shape[0])}


def _draw_no_dvh(fig, title: str | None) -> int:
    """A figure saying "no DVH"; no curves drawn."""
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.text(0.5, 0.5, "no DVH", ha="center", va="center", fontsize=24, color="grey", transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=11)
    return 0


def _draw_curves(fig, curves: pd.DataFrame, prescription_gy: float | None, title: str | None) -> int:
    """One line per (roi_name, source), the prescription line, legend and axes; returns the number of curves."""
    frame = curves if "source" in curves.columns else curves.assign(source="manual")
    groups = list(frame.groupby(["roi_name", "source"], sort=False, dropna=False))
    outside = len(groups) > 8
    ax = fig.add_axes((0.07, 0.1, 0.62 if outside else 0.9, 0.8))
    colours: dict[str, str] = {}
    handles = []
    max_dose = 0.0
    for (roi, source), group in groups:
        group = group.sort_values("dose_gy")
        dose = group["dose_gy"].to_numpy(dtype=float)
        volume = group["volume_pct"].to_numpy(dtype=float)
        colour = colours.setdefault(str(roi), OUTLINE_COLOURS[len(colours) % len(OUTLINE_COLOURS)])
        is_manual = source == "manual"
        label = short_label(str(roi) if is_manual else f"{roi} ({source})", 32)
        (line,) = ax.plot(
            dose,
            volume,
            color=colour,
            linestyle="-" if is_manual else "--",
            linewidth=1.6 if is_manual else 1.2,
            label=label,
        )
        handles.append(line)
        if dose.size and np.isfinite(dose).any():
            max_dose = max(max_dose, float(np.nanmax(dose)))
    if prescription_gy:
        handles.insert(
            0,
            ax.axvline(
                prescription_gy, color="black", linestyle=":", linewidth=1.2, label=f"Rx {prescription_gy:g} Gy"
            ),
        )
    _legend(ax, handles, prescription_gy, outside)
    ax.set_xlim(0.0, max(max_dose, prescription_gy or 0.0, 1e-3) * 1.05)
    ax.set_ylim(0.0, 102.0)
    ax.set_xlabel("Dose (Gy)")
    ax.set_ylabel("Volume (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title or "Cumulative DVH", fontsize=11)
    return len(groups)


def _legend(ax, handles: list, prescription_gy: float | None, outside: bool) -> None:
    """At most :data:`MAX_DVH_LEGEND` curves (plus the prescription) and "+N more"; beside the
    plot when ``outside``, else in its upper right corner."""
    from matplotlib.lines import Line2D

    shown = handles[: MAX_DVH_LEGEND + (1 if prescription_gy else 0)]
    labels = [h.get_label() for h in shown]
    if len(handles) > len(shown):
        shown = [*shown, Line2D([], [], alpha=0.0)]
        labels.append(f"+{len(handles) - len(labels)} more")
    if outside:
        ax.legend(shown, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    else:
        ax.legend(shown, labels, loc="upper right", fontsize=8)
