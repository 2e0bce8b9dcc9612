"""The report's figures, as inline SVG (matplotlib's object API and SVG backend, never pyplot).

Text stays text (``svg.fonttype: none``: small, searchable, in the page's font); the SVG carries no
metadata block, no XML prolog and no external reference, so it is embedded as is in the HTML page.
Every function takes plain data and returns the ``<svg>...</svg>`` string.
"""

from __future__ import annotations

import html
import io
import math
from collections.abc import Sequence

import numpy as np

from rt_resources.report.bands import Band

BAND_COLOUR = "#1f77b4"
ERROR_COLOUR = "#c0392b"
WARN_COLOUR = "#e0a100"
POINT_COLOUR = "#333333"
_NO_METADATA = {"Creator": None, "Date": None, "Format": None, "Type": None}


def figure_svg(fig, label: str) -> str:
    """``fig`` as an ``<svg>`` element, labelled for screen readers with ``label``."""
    from matplotlib import rc_context

    buffer = io.StringIO()
    with rc_context({"svg.fonttype": "none"}):
        fig.savefig(buffer, format="svg", bbox_inches="tight", metadata=_NO_METADATA)
    text = buffer.getvalue()
    svg = text[text.index("<svg") :].strip()
    return svg.replace("<svg ", f'<svg role="img" aria-label="{html.escape(label)}" ', 1)


def dvh_bands_svg(bands: Sequence[Band], ncols: int = 4) -> str:
    """Small multiples: one panel per structure, its median DVH and interquartile band."""
    return figure_svg(dvh_bands_figure(bands, ncols), "DVH bands: median and interquartile range per structure")


def dvh_bands_png(bands: Sequence[Band], path, ncols: int = 4):
    """The same small multiples as a PNG file (for Dagster's asset metadata); returns ``path``."""
    dvh_bands_figure(bands, ncols).savefig(path, format="png", dpi=80, bbox_inches="tight")
    return path


def dvh_bands_figure(bands: Sequence[Band], ncols: int = 4):
    """The matplotlib figure of :func:`dvh_bands_svg`."""
    from matplotlib.figure import Figure

    ncols = max(1, min(ncols, len(bands)))
    nrows = math.ceil(len(bands) / ncols)
    fig = Figure(figsize=(3.1 * ncols, 2.4 * nrows), facecolor="white")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i >= len(bands):
            ax.set_axis_off()
            continue
        band = bands[i]
        ax.fill_between(band.dose_gy, band.p25_pct, band.p75_pct, color=BAND_COLOUR, alpha=0.3, linewidth=0)
        ax.plot(band.dose_gy, band.median_pct, color=BAND_COLOUR, linewidth=1.5)
        ax.set_title(f"{band.label} (n={band.n_courses})", fontsize=9)
        ax.set_xlim(0.0, float(band.dose_gy[-1]))
        ax.set_ylim(0.0, 102.0)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if i // ncols == nrows - 1 or i + ncols >= len(bands):
            ax.set_xlabel("Dose (Gy)", fontsize=8)
        if i % ncols == 0:
            ax.set_ylabel("Volume (%)", fontsize=8)
    fig.tight_layout()
    return fig


def strip_box_svg(
    groups: Sequence[tuple[str, np.ndarray]],
    *,
    xlabel: str,
    label: str,
    xlim: tuple[float, float] | None = None,
    reference_lines: Sequence[tuple[float, str]] = (),
) -> str:
    """Horizontal box plots, one row per group (top to bottom in the given order), each value
    drawn over its box as a point (deterministic vertical jitter); dashed vertical
    ``reference_lines`` (value, label)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.9 + 0.32 * len(groups)), facecolor="white")
    ax = fig.add_subplot()
    positions = np.arange(len(groups), 0, -1, dtype=float)
    values = [np.asarray(v, dtype=float)[np.isfinite(np.asarray(v, dtype=float))] for _, v in groups]
    drawn = [(p, v) for p, v in zip(positions, values, strict=True) if v.size]
    if drawn:
        ax.boxplot(
            [v for _, v in drawn],
            positions=[p for p, _ in drawn],
            orientation="horizontal",
            widths=0.6,
            showfliers=False,
            medianprops={"color": BAND_COLOUR, "linewidth": 1.5},
        )
    rng = np.random.default_rng(0)
    for position, v in drawn:
        ax.scatter(v, position + rng.uniform(-0.18, 0.18, v.size), s=9, color=POINT_COLOUR, alpha=0.7, zorder=3)
    for value, text in reference_lines:
        ax.axvline(value, color="grey", linestyle="--", linewidth=1)
        ax.text(value, len(groups) + 0.55, text, fontsize=7, color="grey", ha="center", va="bottom")
    ax.set_yticks(positions, [name for name, _ in groups], fontsize=8)
    ax.set_ylim(0.4, len(groups) + 0.6)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_svg(fig, label)


def failed_checks_svg(counts: Sequence[tuple[str, int, int]]) -> str:
    """Horizontal stacked bars: per check (name, courses failing ERROR, courses failing WARN)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 0.9 + 0.3 * len(counts)), facecolor="white")
    ax = fig.add_subplot()
    y = np.arange(len(counts), 0, -1, dtype=float)
    errors = np.array([c[1] for c in counts], dtype=float)
    warns = np.array([c[2] for c in counts], dtype=float)
    ax.barh(y, errors, color=ERROR_COLOUR, label="ERROR", height=0.6)
    ax.barh(y, warns, left=errors, color=WARN_COLOUR, label="WARN", height=0.6)
    ax.set_yticks(y, [c[0] for c in counts], fontsize=8)
    ax.set_xlabel("courses where the check failed", fontsize=9)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(True, axis="x", alpha=0.3)
    fig.tight_layout()
    return figure_svg(fig, "failed quality checks per check")
