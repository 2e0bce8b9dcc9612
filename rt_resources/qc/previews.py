"""Course preview images: a CT montage with contours and dose, a DVH plot, and markdown embedding.

Rendering uses matplotlib's object API (``Figure`` + the Agg canvas), never pyplot, so it is
safe in worker processes and leaves no global state behind. matplotlib, SimpleITK, skimage
and PIL are imported inside the functions: importing this module stays cheap.

Display conventions of :func:`ct_montage_png`: the CT is first reoriented to LPS
(``DICOMOrient``), so index i runs to patient left, j to posterior, k to superior; masks and
dose are resampled onto it in physical space, whatever their own grid or voxel order. Axial
planes show patient left on image right and anterior at the top (radiological convention);
coronal and sagittal planes show superior at the top (sagittal: anterior on the left).
Pixel aspect ratios follow the voxel spacing.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rt_resources.fileio import atomic_path

if TYPE_CHECKING:
    import pandas as pd

#: CT display window (width, level) in HU: soft tissue
CT_WINDOW_HU = (400.0, 40.0)
MONTAGE_SIZE_IN = (15.0, 5.5)
DVH_SIZE_IN = (10.0, 5.5)
DPI = 100
DOSE_ALPHA = 0.35
#: dose below this fraction of the prescription (or of the maximum) is not washed
DOSE_FLOOR = 0.10
MAX_MONTAGE_LEGEND = 12
MAX_DVH_LEGEND = 20
TARGET_CLASSES = ("PTV", "CTV", "GTV")
ROI_INDEX_FILE = "rois.json"  # as rt_resources.structures.masks (not imported: it pulls in pydicom)
PREVIEW_DIR = "preview"  #: courses/<key>/preview/*.png
#: distinct colours for outlines, readable on grey CT and beside the dose wash
OUTLINE_COLOURS = (
    "#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4",
    "#42d4f4", "#f032e6", "#bfef45", "#fabed4", "#469990", "#dcbeff",
    "#9a6324", "#fffac8", "#800000", "#aaffc3", "#808000", "#ffd8b1",
)  # fmt: skip
#: where the orientation letters (top, bottom, left, right) sit, in axes fractions
_LABEL_SPOTS = ((0.5, 0.99, "center", "top"), (0.5, 0.01, "center", "bottom"),
                (0.01, 0.5, "left", "center"), (0.99, 0.5, "right", "center"))  # fmt: skip

# ---------------------------------------------------------------- helpers


def _write_png(rgb: np.ndarray, out_png: Path) -> None:
    """Write an (h, w, 3) uint8 array as PNG, atomically."""
    from PIL import Image

    with atomic_path(Path(out_png)) as tmp:
        Image.fromarray(np.ascontiguousarray(rgb)).save(tmp, format="PNG", compress_level=6)


def _render(fig) -> np.ndarray:
    """Draw ``fig`` with Agg and return its RGB pixels (h, w, 3)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def _short(name: str, n: int = 28) -> str:
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def _read_3d(path: Path, pixel_type=None, *, orient: bool = False):
    """A SimpleITK image, 2-D files promoted to one slice; reoriented to LPS with ``orient``.

    Only the CT needs reorienting (it defines the displayed grid); masks and dose are
    resampled onto it in physical space, whatever their voxel order.
    """
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path)) if pixel_type is None else sitk.ReadImage(str(path), pixel_type)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(f"{Path(path).name}: {image.GetNumberOfComponentsPerPixel()} components per pixel")
    if image.GetDimension() == 2:
        image = sitk.JoinSeries(image)
    if image.GetDimension() != 3:
        raise ValueError(f"{Path(path).name}: {image.GetDimension()}-D image")
    return sitk.DICOMOrient(image, "LPS") if orient else image


def list_masks(folder: Path) -> list[tuple[str, Path]]:
    """``(roi_name, path)`` of every mask in ``folder``: ``rois.json`` order, then unlisted files by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out: list[tuple[str, Path]] = []
    seen: set[str] = set()
    index = folder / ROI_INDEX_FILE
    if index.is_file():
        try:
            entries = json.loads(index.read_text())
        except ValueError:
            entries = []
        for entry in entries if isinstance(entries, list) else []:
            file = entry.get("file") if isinstance(entry, dict) else None
            if not file or Path(file).name in seen or not (folder / Path(file).name).is_file():
                continue  # an ROI without contours has no file
            seen.add(Path(file).name)
            out.append((str(entry.get("roi_name") or Path(file).name[: -len(".nii.gz")]), folder / Path(file).name))
    for path in sorted(folder.glob("*.nii.gz")):
        if path.name not in seen and not path.name.startswith("."):
            out.append((path.name[: -len(".nii.gz")], path))
    return out


def _target_rank(name: str, hint: str | None) -> tuple[int, int] | None:
    """Sort key of a candidate target ROI (lower first), None if it is no target."""
    if hint and name.strip().lower() == hint.strip().lower():
        return (0, 0)
    upper = name.upper()
    for rank, cls in enumerate(TARGET_CLASSES):
        if cls in upper:
            return (1 + rank, 0 if upper.strip() == cls else 1)
    return None


def _centroid_mm(image) -> tuple[float, float, float] | None:
    """Physical centroid (LPS mm) of the non-zero voxels, None if there are none."""
    arr = _array_view(image)
    nz = np.nonzero(arr)
    if not nz[0].size:
        return None
    k, j, i = (float(np.mean(a)) for a in nz)
    return tuple(float(v) for v in image.TransformContinuousIndexToPhysicalPoint((i, j, k)))


def _array_view(image) -> np.ndarray:
    import SimpleITK as sitk

    return sitk.GetArrayViewFromImage(image)


@dataclass
class _Plane:
    """One displayed plane through the oriented CT: a one-voxel slab and how to show it."""

    name: str
    ref: Any  # SimpleITK.Image, one voxel thick, on the CT grid
    squeeze: Callable[[np.ndarray], np.ndarray]  # (z, y, x) slab array -> (rows, cols)
    aspect: float  # row spacing / column spacing
    origin: str  # "upper": row 0 at the top; "lower": row 0 at the bottom
    labels: tuple[str, str, str, str]  # top, bottom, left, right
    title: str
    index: int
    image: np.ndarray = field(default=None)  # CT pixels (rows, cols)

    def sample(self, image, interpolator, pixel_type, default: float = 0.0) -> np.ndarray:
        import SimpleITK as sitk

        out = sitk.Resample(image, self.ref, sitk.Transform(), interpolator, default, pixel_type)
        return self.squeeze(sitk.GetArrayFromImage(out))


def _planes(ct, centre_index: tuple[int, int, int]) -> list[_Plane]:
    import SimpleITK as sitk

    i, j, k = centre_index
    sx, sy, sz = ct.GetSpacing()
    x, y, z = ct.TransformIndexToPhysicalPoint((i, j, k))
    planes = [
        _Plane("axial", ct[:, :, k : k + 1], lambda a: a[0], sy / sx, "upper", ("A", "P", "R", "L"),
               f"axial  z = {z:.1f} mm", k),
        _Plane("coronal", ct[:, j : j + 1, :], lambda a: a[:, 0, :], sz / sx, "lower", ("S", "I", "R", "L"),
               f"coronal  y = {y:.1f} mm", j),
        _Plane("sagittal", ct[i : i + 1, :, :], lambda a: a[:, :, 0], sz / sy, "lower", ("S", "I", "A", "P"),
               f"sagittal  x = {x:.1f} mm", i),
    ]  # fmt: skip
    for plane in planes:
        plane.image = plane.squeeze(sitk.GetArrayFromImage(plane.ref)).astype(np.float32)
    return planes


def _outlines(mask2d: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (rows, cols) of a 2-D mask; padding closes the ones that touch the edge."""
    from skimage.measure import find_contours

    if not mask2d.any():
        return []
    padded = np.pad(mask2d > 0, 1).astype(np.float32)
    return [c - 1.0 for c in find_contours(padded, 0.5)]


# ---------------------------------------------------------------- CT montage


def ct_montage_png(
    ct_path: Path,
    out_png: Path,
    *,
    manual_masks_dir: Path | None = None,
    auto_masks_dirs: dict[str, Path] | None = None,
    dose_path: Path | None = None,
    target_hint: str | None = None,
    prescription_gy: float | None = None,
) -> dict:
    """Axial, coronal and sagittal planes through the target centre, as one PNG.

    The centre is the centroid of the first non-empty manual mask whose ROI name is
    ``target_hint`` or contains PTV, CTV or GTV (in that order; ``rois.json`` order within
    a class), else the dose maximum, else the image centre. The CT is shown in a W400/L40
    window; manual ROIs as solid outlines, ROIs of other sources (``auto_masks_dirs``:
    source -> folder) as thin dashed outlines; the dose as a turbo colour wash, hidden
    below 10 % of the prescription (or of the maximum). Masks and dose on other grids are
    resampled onto the CT (nearest neighbour / linear).

    Returns ``path``, ``centre_mm`` (LPS), ``centre_from`` (the ROI name, ``"dose max"`` or
    ``"image centre"``), ``n_contours`` (ROI outlines drawn: (ROI, source) pairs seen in at
    least one plane), ``width_px``, ``height_px``, and for inspection ``rois_shown``,
    ``dose_max_gy``, ``notes`` and ``panels`` (per plane: slice ``index``, ``centre_px``, the
    target centre's (column, row) pixel in the PNG, and ``bbox_px``, the image's (left, top,
    right, bottom) pixels).
    """
    import SimpleITK as sitk
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    notes: list[str] = []
    ct = _read_3d(ct_path, sitk.sitkFloat32, orient=True)
    size = ct.GetSize()

    def read_masks(folder: Path | None, source: str) -> list[tuple[str, str, Any]]:
        out = []
        for roi, path in list_masks(folder) if folder else []:
            try:
                out.append((roi, source, _read_3d(path)))
            except (RuntimeError, ValueError) as exc:
                notes.append(f"{source}/{path.name}: unreadable ({str(exc).strip().splitlines()[0][:120]})")
        return out

    manual = read_masks(manual_masks_dir, "manual")
    auto = [m for source, folder in (auto_masks_dirs or {}).items() for m in read_masks(folder, source)]

    dose = None
    dose_max = 0.0
    if dose_path is not None and Path(dose_path).is_file():
        dose = _read_3d(dose_path, sitk.sitkFloat32)
        dose_arr = _array_view(dose)
        dose_max = float(dose_arr.max()) if dose_arr.size else 0.0
        if not np.isfinite(dose_max) or dose_max <= 0:
            notes.append("dose is zero everywhere: no dose wash")
            dose = None
    elif dose_path is not None:
        notes.append("no dose file")

    # -- centre
    centre = None
    centre_from = "image centre"
    ranked = sorted(
        ((rank, n, roi, image) for n, (roi, _, image) in enumerate(manual) if (rank := _target_rank(roi, target_hint))),
        key=lambda t: (t[0], t[1]),
    )
    for _, _, roi, image in ranked:
        centre = _centroid_mm(image)
        if centre is not None:
            centre_from = roi
            break
    if centre is None and dose is not None:
        k, j, i = np.unravel_index(int(np.argmax(_array_view(dose))), _array_view(dose).shape)
        centre = tuple(float(v) for v in dose.TransformIndexToPhysicalPoint((int(i), int(j), int(k))))
        centre_from = "dose max"
    if centre is None:
        centre = tuple(float(v) for v in ct.TransformContinuousIndexToPhysicalPoint(tuple((n - 1) / 2.0 for n in size)))
    cont = ct.TransformPhysicalPointToContinuousIndex(centre)
    centre_index = tuple(int(min(max(round(c), 0), n - 1)) for c, n in zip(cont, size, strict=True))
    if centre_index != tuple(int(round(c)) for c in cont):
        notes.append("target centre outside the CT: planes clamped to its edge")
    planes = _planes(ct, centre_index)

    # -- figure
    width, level = CT_WINDOW_HU
    fig = Figure(figsize=MONTAGE_SIZE_IN, dpi=DPI, facecolor="white")
    cmap = colormaps["turbo"]
    floor = DOSE_FLOOR * (prescription_gy if prescription_gy else dose_max)
    norm = Normalize(0.0, max(dose_max, 1e-6))
    colour_of: dict[tuple[str, str], str] = {}
    legend: list[tuple[str, str, str]] = []  # label, colour, linestyle
    axes = []
    for p, plane in enumerate(planes):
        ax = fig.add_axes((0.005 + p * 0.26, 0.03, 0.255, 0.86))
        ax.set_axis_off()
        ax.imshow(plane.image, cmap="gray", vmin=level - width / 2, vmax=level + width / 2, aspect=plane.aspect,
                  origin=plane.origin, interpolation="bilinear")  # fmt: skip
        if dose is not None:
            d = plane.sample(dose, sitk.sitkLinear, sitk.sitkFloat32)
            ax.imshow(np.ma.masked_less(d, floor), cmap=cmap, norm=norm, alpha=DOSE_ALPHA, aspect=plane.aspect,
                      origin=plane.origin, interpolation="nearest")  # fmt: skip
        ax.set_title(plane.title, fontsize=10)
        rows, cols = plane.image.shape
        thin = rows * plane.aspect < 0.15 * cols  # a strip (few slices): no room for top and bottom letters
        for text, (x, y, ha, va) in list(zip(plane.labels, _LABEL_SPOTS, strict=True))[2 if thin else 0 :]:
            ax.text(x, y, text, transform=ax.transAxes, ha=ha, va=va, color="yellow", fontsize=9, fontweight="bold")
        axes.append(ax)

    for n, (roi, source, image) in enumerate(manual + auto):
        drawn = False
        is_manual = source == "manual"
        colour = OUTLINE_COLOURS[n % len(OUTLINE_COLOURS)]
        for plane, ax in zip(planes, axes, strict=True):
            for line in _outlines(plane.sample(image, sitk.sitkNearestNeighbor, image.GetPixelID())):
                ax.plot(line[:, 1], line[:, 0], color=colour, linewidth=1.4 if is_manual else 0.8,
                        linestyle="-" if is_manual else (0, (3, 2)))  # fmt: skip
                drawn = True
        if drawn:
            colour_of[(roi, source)] = colour
            legend.append((_short(roi if is_manual else f"{roi} ({source})"), colour, "-" if is_manual else "--"))
    for plane, ax in zip(planes, axes, strict=True):  # plotting must not widen the image's limits
        rows, cols = plane.image.shape
        ax.set_xlim(-0.5, cols - 0.5)
        ax.set_ylim((rows - 0.5, -0.5) if plane.origin == "upper" else (-0.5, rows - 0.5))

    if legend:
        shown = legend[:MAX_MONTAGE_LEGEND]
        handles = [Line2D([], [], color=c, linestyle=ls, linewidth=1.5) for _, c, ls in shown]
        labels = [label for label, _, _ in shown]
        if len(legend) > len(shown):
            handles.append(Line2D([], [], alpha=0.0))
            labels.append(f"+{len(legend) - len(shown)} more")
        fig.legend(handles, labels, loc="upper left", bbox_to_anchor=(0.845, 0.9), fontsize=8, frameon=False,
                   handlelength=2.2)  # fmt: skip
    if dose is not None:
        cax = fig.add_axes((0.795, 0.12, 0.01, 0.68))
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax)
        bar.set_label("Dose (Gy)", fontsize=9)
        bar.ax.tick_params(labelsize=8)
        if prescription_gy and prescription_gy <= dose_max:
            bar.ax.axhline(prescription_gy, color="black", linewidth=1.2)
    fig.suptitle(f"CT W{width:g}/L{level:g}   centre: {_short(centre_from, 40)}", fontsize=10, x=0.4, y=0.985)

    rgb = _render(fig)
    height_px, width_px = rgb.shape[:2]
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
    _write_png(rgb, out_png)
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


# ---------------------------------------------------------------- DVH plot


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
    from matplotlib.lines import Line2D

    fig = Figure(figsize=DVH_SIZE_IN, dpi=DPI, facecolor="white")
    ok = curves is not None and len(curves) and {"roi_name", "dose_gy", "volume_pct"} <= set(curves.columns)
    n_curves = 0
    if not ok:
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no DVH", ha="center", va="center", fontsize=24, color="grey", transform=ax.transAxes)
        if title:
            fig.suptitle(title, fontsize=11)
    else:
        frame = curves if "source" in curves.columns else curves.assign(source="manual")
        groups = list(frame.groupby(["roi_name", "source"], sort=False, dropna=False))
        n_curves = len(groups)
        outside = n_curves > 8
        ax = fig.add_axes((0.07, 0.1, 0.62 if outside else 0.9, 0.8))
        colours: dict[str, str] = {}
        handles: list[Line2D] = []
        max_dose = 0.0
        for (roi, source), group in groups:
            group = group.sort_values("dose_gy")
            dose = group["dose_gy"].to_numpy(dtype=float)
            volume = group["volume_pct"].to_numpy(dtype=float)
            colour = colours.setdefault(str(roi), OUTLINE_COLOURS[len(colours) % len(OUTLINE_COLOURS)])
            is_manual = source == "manual"
            label = _short(str(roi) if is_manual else f"{roi} ({source})", 32)
            (line,) = ax.plot(dose, volume, color=colour, linestyle="-" if is_manual else "--",
                              linewidth=1.6 if is_manual else 1.2, label=label)  # fmt: skip
            handles.append(line)
            if dose.size and np.isfinite(dose).any():
                max_dose = max(max_dose, float(np.nanmax(dose)))
        if prescription_gy:
            handles.insert(0, ax.axvline(prescription_gy, color="black", linestyle=":", linewidth=1.2,
                                         label=f"Rx {prescription_gy:g} Gy"))  # fmt: skip
        shown = handles[: MAX_DVH_LEGEND + (1 if prescription_gy else 0)]
        labels = [h.get_label() for h in shown]
        if len(handles) > len(shown):
            shown = [*shown, Line2D([], [], alpha=0.0)]
            labels.append(f"+{len(handles) - len(labels)} more")
        if outside:
            ax.legend(shown, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
        else:
            ax.legend(shown, labels, loc="upper right", fontsize=8)
        ax.set_xlim(0.0, max(max_dose, prescription_gy or 0.0, 1e-3) * 1.05)
        ax.set_ylim(0.0, 102.0)
        ax.set_xlabel("Dose (Gy)")
        ax.set_ylabel("Volume (%)")
        ax.grid(True, alpha=0.3)
        ax.set_title(title or "Cumulative DVH", fontsize=11)
    rgb = _render(fig)
    _write_png(rgb, out_png)
    return {"path": str(out_png), "n_curves": n_curves, "width_px": int(rgb.shape[1]), "height_px": int(rgb.shape[0])}


# ---------------------------------------------------------------- markdown


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
