"""Figures to pixels and files: Agg rendering, atomic PNG writes, markdown embedding, shared style."""

from __future__ import annotations

import base64
import io
import re
from pathlib import Path

import numpy as np

from rt_resources.fileio import atomic_path

DPI = 100
#: distinct colours for outlines, readable on grey CT and beside the dose wash
OUTLINE_COLOURS = (
    "#e6194b",
    "#3cb44b",
    "#ffe119",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#42d4f4",
    "#f032e6",
    "#bfef45",
    "#fabed4",
    "#469990",
    "#dcbeff",
    "#9a6324",
    "#fffac8",
    "#800000",
    "#aaffc3",
    "#808000",
    "#ffd8b1",
)


def render_rgb(fig) -> np.ndarray:
    """Draw ``fig`` with Agg and return its RGB pixels (h, w, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def write_png(rgb: np.ndarray, out_png: Path) -> None:
    """Write an (h, w, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    with atomic_path(Path(out_png)) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG", compress_level=6)


def short_label(name: str, n: int = 28) -> str:
    """``name`` cut to ``n`` characters with an ellipsis (legend entries, titles)."""
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def png_markdown(path: Path, alt: str = "preview", max_width_px: int | None = None) -> str:
    """``![alt](data:image/png;base64,...)``: how an image shows in Dagster's markdown metadata.

    With ``max_width_px``, a wider image is scaled down (aspect kept) before it is embedded;
    otherwise the file's bytes are embedded unchanged.
    """
    data = Path(path).read_bytes()
    if max_width_px:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            if image.width > max_width_px:
                height = max(1, round(image.height * max_width_px / image.width))
                small = image.convert("RGB").resize((int(max_width_px), height), Image.Resampling.LANCZOS)
                buffer = io.BytesIO()
                small.save(buffer, format="PNG", compress_level=6)
                data = buffer.getvalue()
    alt = " ".join(re.sub(r"[\[\]]", " ", alt).split()) or "preview"
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode('ascii')})"
