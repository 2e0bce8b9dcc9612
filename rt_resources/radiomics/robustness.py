"""Radiomic feature robustness under image perturbations, as an ICC per feature.

After Zwanenburg A, Leger S, Agolli L, et al. "Assessing robustness of radiomic features by image
perturbation." Sci Rep 9, 614 (2019), doi:10.1038/s41598-018-36938-4. Each ROI is extracted
``n_perturbations`` times, each time after a chain of random perturbations of its image and mask
(every draw seeded from ``seed``, the ROI and the perturbation's index, so a run is reproducible):

1. **noise** (N): Gaussian noise with the image's own noise SD, estimated around the ROI as
   ``median(|d|) / 0.6745`` of the finest diagonal Haar detail ``d`` (Donoho and Johnstone 1994;
   MIRP, the paper's software, uses the same wavelet estimate of Chang et al. 2000);
2. **translation** (T) and **rotation** (R), in one resampling of image (B-spline) and mask
   (linear, >= 0.5): a shift by a random fraction in [0, 1) of the voxel spacing along each axis,
   and a rotation about the ROI's centroid around the slice normal, uniform in
   ``±max_rotation_deg`` (15 degrees);
3. **volume adaptation** (V): the mask grown or shrunk by a fraction uniform in
   ``±max_volume_change`` (0.2) of its volume, along its signed distance map (so it dilates or
   erodes evenly, to the voxel);
4. **contour randomisation** (C): supervoxels of the image around the ROI (SLIC, of
   ``supervoxel_mm3``, 500 mm3, as in MIRP); each enters the new mask with probability equal to
   the fraction of it that lies inside the ROI.

Features of each perturbation are computed by the project's engine (:func:`extract_image`, the
same parameters and backend as the course's radiomics) on the image cropped around the ROI.

**ICC form: ICC(1,1)** (Shrout and Fleiss 1979, case 1; McGraw and Wong's one-way random,
absolute agreement, single measurement), with its 95 % confidence interval from the F
distribution, computed by pingouin (``intraclass_corr``, row "ICC(1,1)"). Each (course, ROI,
source) is a subject and each perturbation a rater. The one-way model is the right one because
perturbation k of one ROI has nothing in common with perturbation k of another (each is its own
random draw): there is no rater effect to separate, as ICC(2,1) and ICC(3,1) would. It is also the
form Zwanenburg et al. used, so thresholds compare. The design is the same for one course with
several ROIs as for a cohort (concatenate the courses' :func:`perturbed_features` tables before
:func:`feature_icc`). A feature is flagged ``robust`` when its ICC is at least ``threshold``
(0.90: Zwanenburg et al.'s robust features; "excellent" reliability after Koo and Li 2016); its
CI's lower bound is there for a stricter rule. An ICC needs at least two subjects and two raters
whose values are finite; a feature constant over every subject and perturbation has no ICC (NaN,
not robust).
"""

from __future__ import annotations

import math
import warnings
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from rt_resources.parallel import MemoryPolicy, RetryPolicy, run_pool
from rt_resources.radiomics.course import ID_COLUMNS
from rt_resources.radiomics.engine import (
    RadiomicsSettings,
    RadiomicsTask,
    _count_voxels,
    _load_image,
    check_inputs,
    extract_image,
)

#: how the ICC is computed (module docstring), as recorded with every robustness table
ICC_FORM = "ICC(1,1): one-way random, absolute agreement, single measurement (Shrout and Fleiss case 1)"
ICC_COLUMNS = ["feature", "icc", "ci_low", "ci_high", "n_subjects", "n_raters", "robust"]
#: ICC at or above which a feature is robust (Zwanenburg et al. 2019)
ROBUST_ICC = 0.90


@dataclass(frozen=True)
class PerturbationSettings:
    """Which perturbations make up the chain, and their ranges (module docstring)."""

    noise: bool = True
    noise_sd: float | None = None  #: intensity units; None: estimated from the image around the ROI
    translation: bool = True
    rotation: bool = True
    max_rotation_deg: float = 15.0
    volume: bool = True
    max_volume_change: float = 0.2  #: fraction of the ROI's volume
    contour: bool = True
    supervoxel_mm3: float = 500.0  #: supervoxel size for contour randomisation (at least 20 voxels), as MIRP
    margin_mm: float = 20.0  #: the image is cropped to the ROI's box widened by this (plus 30 % of its extent)


@dataclass(frozen=True)
class Perturbation:
    """The random draw of one perturbation of one ROI (JSON-ready with ``asdict``)."""

    index: int
    seed: int  #: seeds the noise and the contour randomisation
    noise: bool
    shift_fraction: tuple[float, float, float]  #: of the voxel spacing, per image axis (x, y, z)
    angle_deg: float
    volume_change: float  #: fraction of the ROI's volume (+ grows)
    contour: bool


def draw_perturbations(n: int, seed: int, roi_key: str, settings: PerturbationSettings) -> list[Perturbation]:
    """``n`` perturbation draws for one ROI, reproducible from ``seed`` and ``roi_key``."""
    import numpy as np

    draws = []
    for k in range(n):
        rng = np.random.default_rng([int(seed), zlib.crc32(roi_key.encode()), k])
        shift = rng.uniform(0.0, 1.0, 3)
        angle = rng.uniform(-settings.max_rotation_deg, settings.max_rotation_deg)
        change = rng.uniform(-settings.max_volume_change, settings.max_volume_change)
        draws.append(
            Perturbation(
                index=k,
                seed=int(rng.integers(2**31)),
                noise=settings.noise,
                shift_fraction=tuple(float(s) for s in shift) if settings.translation else (0.0, 0.0, 0.0),
                angle_deg=float(angle) if settings.rotation else 0.0,
                volume_change=float(change) if settings.volume else 0.0,
                contour=settings.contour,
            )
        )
    return draws


# --------------------------------------------------------------------------- perturbations


def estimate_noise_sd(array: Any) -> float:
    """Noise SD of a (z, y, x) array: ``median(|d|) / 0.6745`` of its finest diagonal Haar detail
    ``d`` (orthonormal, so Gaussian noise of SD s gives d of SD s; smooth structure gives d ~ 0)."""
    import numpy as np

    a = np.asarray(array, dtype=np.float64)
    a = a[: a.shape[0] // 2 * 2, : a.shape[1] // 2 * 2, : a.shape[2] // 2 * 2]
    if min(a.shape) < 2:
        return 0.0
    d = sum((-1) ** (i + j + k) * a[i::2, j::2, k::2] for i in (0, 1) for j in (0, 1) for k in (0, 1)) / math.sqrt(8)
    return float(np.median(np.abs(d)) / 0.6745)


def crop_around(image: Any, mask: Any, margin_mm: float) -> tuple[Any, Any]:
    """Image and mask cropped to the mask's bounding box widened by ``margin_mm`` plus 30 % of the
    ROI's largest extent (room for rotation, growth and pyradiomics' padding)."""
    import numpy as np
    import SimpleITK as sitk

    arr = sitk.GetArrayViewFromImage(mask) > 0
    z, y, x = np.nonzero(arr)
    lo = np.array([x.min(), y.min(), z.min()])
    hi = np.array([x.max(), y.max(), z.max()])
    spacing = np.array(mask.GetSpacing())
    extent_mm = float(((hi - lo + 1) * spacing).max())
    pad = np.ceil((margin_mm + 0.3 * extent_mm) / spacing).astype(int)
    size = np.array(mask.GetSize())
    lo = np.maximum(lo - pad, 0)
    hi = np.minimum(hi + pad, size - 1)
    index, extent = [int(v) for v in lo], [int(v) for v in hi - lo + 1]
    return sitk.RegionOfInterest(image, extent, index), sitk.RegionOfInterest(mask, extent, index)


def _rigid(image: Any, mask: Any, p: Perturbation) -> tuple[Any, Any]:
    """Translate and rotate image and mask together about the ROI's centroid, around the slice normal."""
    import numpy as np
    import SimpleITK as sitk

    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    center = stats.GetCentroid(1)
    direction = np.array(image.GetDirection()).reshape(3, 3)
    axis = tuple(float(v) for v in direction[:, 2])  # the slice normal in patient coordinates
    shift = direction @ (np.array(p.shift_fraction) * np.array(image.GetSpacing()))
    transform = sitk.VersorRigid3DTransform()
    transform.SetCenter(center)
    transform.SetRotation(axis, math.radians(p.angle_deg))
    transform.SetTranslation(tuple(float(v) for v in shift))
    fill = float(sitk.GetArrayViewFromImage(image).min())
    moved = sitk.Resample(image, image, transform, sitk.sitkBSpline, fill, sitk.sitkFloat32)
    moved_mask = sitk.Resample(sitk.Cast(mask, sitk.sitkFloat32), mask, transform, sitk.sitkLinear, 0.0)
    return moved, sitk.Cast(moved_mask >= 0.5, sitk.sitkUInt8)


def _adapt_volume(mask: Any, change: float) -> Any:
    """The mask grown (change > 0) or shrunk to ``(1 + change)`` times its voxels, along its signed
    distance map (ties at the threshold: the nearest voxels first, in array order)."""
    import numpy as np
    import SimpleITK as sitk

    distance = sitk.SignedMaurerDistanceMap(mask, insideIsPositive=False, squaredDistance=False, useImageSpacing=True)
    d = sitk.GetArrayFromImage(distance).ravel()
    n = int(np.count_nonzero(sitk.GetArrayViewFromImage(mask)))
    target = int(np.clip(round(n * (1.0 + change)), 2, d.size))
    keep = np.zeros(d.size, dtype=np.uint8)
    keep[np.argsort(d, kind="stable")[:target]] = 1
    out = sitk.GetImageFromArray(keep.reshape(sitk.GetArrayViewFromImage(mask).shape))
    out.CopyInformation(mask)
    return out


def _randomise_contour(image: Any, mask: Any, seed: int, supervoxel_mm3: float) -> Any:
    """Supervoxels (SLIC) of the image; each enters the new mask with probability equal to the
    fraction of it inside the ROI, as MIRP does it: intensities clipped to the ROI's range widened
    by 10 % and scaled to [0, 1], supervoxels of ``supervoxel_mm3`` (at least 20 voxels), SLIC
    with sigma = the smallest spacing and compactness 0.05; a supervoxel at least 90 % inside
    always enters, one under 20 % never, the most-overlapping one always; then a binary closing."""
    import numpy as np
    import SimpleITK as sitk
    from scipy.ndimage import binary_closing
    from skimage.segmentation import slic

    arr = sitk.GetArrayFromImage(image).astype(np.float64)
    roi = sitk.GetArrayViewFromImage(mask) > 0
    lo, hi = float(arr[roi].min()), float(arr[roi].max())
    lo, hi = lo - 0.1 * (hi - lo), hi + 0.1 * (hi - lo)
    scaled = (np.clip(arr, lo, hi) - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    spacing = np.array(image.GetSpacing()[::-1])
    voxels_per_segment = max(20.0, supervoxel_mm3 / float(np.prod(spacing)))
    labels = slic(
        scaled, n_segments=max(2, int(arr.size / voxels_per_segment)), compactness=0.05,
        sigma=float(spacing.min()), spacing=spacing, channel_axis=None, start_label=1,
        enforce_connectivity=True, convert2lab=False,
    )  # fmt: skip
    counts = np.bincount(labels.ravel())
    inside = np.bincount(labels[roi], minlength=counts.size)
    fraction = np.divide(inside, counts, out=np.zeros(counts.size), where=counts > 0)
    fraction[int(np.argmax(fraction))] = 1.0
    fraction[fraction >= 0.9] = 1.0
    fraction[fraction < 0.2] = 0.0
    chosen = np.random.default_rng([seed, 2]).uniform(size=fraction.size) < fraction
    out = sitk.GetImageFromArray(binary_closing(chosen[labels]).astype(np.uint8))
    out.CopyInformation(mask)
    return out


def perturb(image: Any, mask: Any, p: Perturbation, settings: PerturbationSettings, noise_sd: float) -> tuple[Any, Any]:
    """The perturbed (float32 image, 0/1 mask) of one draw, in the module docstring's order:
    noise, translation and rotation, volume adaptation, contour randomisation. A step that would
    leave fewer than 2 voxels is skipped."""
    import numpy as np
    import SimpleITK as sitk

    image = sitk.Cast(image, sitk.sitkFloat32)
    mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
    if p.noise and noise_sd > 0:
        rng = np.random.default_rng([p.seed, 1])
        arr = sitk.GetArrayFromImage(image) + rng.normal(0.0, noise_sd, image.GetSize()[::-1]).astype(np.float32)
        noisy = sitk.GetImageFromArray(arr)
        noisy.CopyInformation(image)
        image = noisy

    def enough(m: Any) -> bool:
        return int(np.count_nonzero(sitk.GetArrayViewFromImage(m))) >= 2

    if any(p.shift_fraction) or p.angle_deg:
        moved_image, moved_mask = _rigid(image, mask, p)
        if enough(moved_mask):
            image, mask = moved_image, moved_mask
    if p.volume_change:
        mask = _adapt_volume(mask, p.volume_change)
    if p.contour:
        randomised = _randomise_contour(image, mask, p.seed, settings.supervoxel_mm3)
        if enough(randomised):
            mask = randomised
    return image, mask


def dice(a: Any, b: Any) -> float:
    """Dice coefficient of two 0/1 masks on one grid."""
    import numpy as np
    import SimpleITK as sitk

    x, y = sitk.GetArrayViewFromImage(a) > 0, sitk.GetArrayViewFromImage(b) > 0
    total = int(x.sum() + y.sum())
    return 2.0 * int(np.count_nonzero(x & y)) / total if total else 1.0


# --------------------------------------------------------------------------- features per perturbation


@dataclass(frozen=True)
class _PerturbTask:
    roi_name: str
    mask_path: Path
    perturbation: Perturbation
    n_voxels: int
    params: Path  #: as the course's extraction chooses it (RadiomicsSettings.params_for)


@dataclass(frozen=True)
class _PerturbAndExtract:
    """The pool's work function: perturb one ROI once and extract its features (picklable)."""

    image_path: str
    settings: RadiomicsSettings
    perturbation: PerturbationSettings

    def __call__(self, task: _PerturbTask) -> dict[str, Any]:
        import numpy as np
        import SimpleITK as sitk

        full_image, full_mask = _load_image(self.image_path), sitk.ReadImage(str(task.mask_path))
        check_inputs(full_image, full_mask, self.image_path, str(task.mask_path), image_key=self.image_path)
        image, mask = crop_around(full_image, full_mask, self.perturbation.margin_mm)
        mask = sitk.Cast(mask > 0, sitk.sitkUInt8)
        if self.perturbation.noise_sd is not None:
            noise_sd = float(self.perturbation.noise_sd)
        else:
            noise_sd = estimate_noise_sd(sitk.GetArrayViewFromImage(image))
        p = task.perturbation
        moved_image, moved_mask = perturb(image, mask, p, self.perturbation, noise_sd)
        features, _record = extract_image(
            moved_image, moved_mask, task.params, self.settings,
            image_name=f"{self.image_path} (perturbation {p.index})", mask_name=f"{task.mask_path} (perturbed)",
        )  # fmt: skip
        draw = {
            "perturbation": p.index,
            "perturbation_noise_sd": noise_sd if p.noise else 0.0,
            "perturbation_shift_x": p.shift_fraction[0],
            "perturbation_shift_y": p.shift_fraction[1],
            "perturbation_shift_z": p.shift_fraction[2],
            "perturbation_angle_deg": p.angle_deg,
            "perturbation_volume_change": p.volume_change,
            "perturbation_contour": p.contour,
            "perturbation_n_voxels": int(np.count_nonzero(sitk.GetArrayViewFromImage(moved_mask))),
            "perturbation_dice": dice(mask, moved_mask),
        }
        return {**draw, **features}


def perturbed_features(
    image_path: Path | str,
    masks: Mapping[str, Path | str],
    settings: RadiomicsSettings,
    n_perturbations: int = 10,
    seed: int = 0,
    perturbation: PerturbationSettings | None = None,
    course_key: str = "",
    source: str = "manual",
    workers: int = 1,
    sequential: bool = True,
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """Features of every ROI in ``masks`` (ROI name -> mask on ``image_path``'s grid) under
    ``n_perturbations`` perturbations each.

    Returns a long table, one row per (ROI, perturbation): ``course_key, roi_name, source,
    perturbation`` (its index), the draw (``perturbation_noise_sd``, ``perturbation_shift_x/y/z``
    in voxels, ``perturbation_angle_deg``, ``perturbation_volume_change``,
    ``perturbation_contour``) and its effect (``perturbation_n_voxels``, ``perturbation_dice``
    against the unperturbed mask), then the features with pyradiomics' names; and the failures
    (``{roi_name, perturbation, error, attempts}``). ``settings`` gives the parameter file (as
    ``RadiomicsSettings.params_for`` chooses it for the ROI), the backend, retries and timeout;
    ``workers``/``sequential`` as in :func:`rt_resources.parallel.run_pool`.
    """
    options = perturbation or PerturbationSettings()
    tasks = []
    for roi_name, mask_path in masks.items():
        n_voxels, volume_cc = _count_voxels(Path(mask_path))
        params = settings.params_for(RadiomicsTask(roi_name, source, Path(mask_path), n_voxels, volume_cc))
        key = f"{course_key}/{source}/{roi_name}"
        tasks += [
            _PerturbTask(roi_name, Path(mask_path), p, n_voxels, params)
            for p in draw_perturbations(n_perturbations, seed, key, options)
        ]
    outcome = run_pool(
        _PerturbAndExtract(str(image_path), settings, options),
        tasks,
        workers=workers,
        policy=RetryPolicy(settings.attempts, settings.backoff_s, settings.timeout_s),
        sequential=sequential,
        initializer=_load_image,
        initargs=(str(image_path),),
        cost=lambda t: float(t.n_voxels),
        describe=lambda t: f"{t.roi_name} perturbation {t.perturbation.index}",
        label="radiomics_robustness",
        memory=MemoryPolicy(peak_hint_bytes=settings.worker_peak_hint_bytes),
    )
    rows = [
        {"course_key": course_key, "roi_name": tasks[i].roi_name, "source": source, **outcome.results[i]}
        for i in sorted(outcome.results)
    ]
    failures = [
        {"roi_name": tasks[i].roi_name, "perturbation": tasks[i].perturbation.index, **outcome.failures[i]}
        for i in sorted(outcome.failures)
    ]
    table = pd.DataFrame(rows)
    if table.empty:
        table = pd.DataFrame(columns=[*ID_COLUMNS, "perturbation"])
    return table, failures


# --------------------------------------------------------------------------- ICC


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a :func:`perturbed_features` table (not IDs, not the draw)."""
    return [c for c in table.columns if c not in ID_COLUMNS and not c.startswith("perturbation")]


def _icc_1_1(long: pd.DataFrame) -> tuple[float, float, float, int, int]:
    """ICC(1,1), its 95 % CI, subjects and raters, by pingouin, unrounded; NaN where undefined."""
    import numpy as np
    import pingouin

    values = long.assign(value=long["value"].replace([np.inf, -np.inf], np.nan))
    wide = values.pivot_table(index="subject", columns="rater", values="value", observed=True)
    wide = wide.dropna(axis=0, how="any")  # listwise: a subject needs a finite value under every perturbation
    n, k = wide.shape
    if n < 2 or k < 2 or np.ptp(wide.to_numpy()) == 0:
        return math.nan, math.nan, math.nan, n, k
    saved = dict(pingouin.options)
    pingouin.options.update({key: None for key in saved if key.startswith("round")})  # CI95 is rounded by default
    try:
        with warnings.catch_warnings():
            # no variation within subjects divides by zero in the F statistics (ICC 1); pandas deprecations
            warnings.filterwarnings("ignore", module="pingouin")
            table = pingouin.intraclass_corr(
                wide.reset_index().melt(id_vars="subject", var_name="rater", value_name="value"),
                targets="subject", raters="rater", ratings="value",
            ).set_index("Type")  # fmt: skip
    finally:
        pingouin.options.clear()
        pingouin.options.update(saved)
    icc = float(table.at["ICC(1,1)", "ICC"])
    low, high = (float(v) for v in table.at["ICC(1,1)", "CI95"])
    if icc == 1.0 and math.isnan(low):  # identical under every perturbation: the interval is the point
        low = high = 1.0
    return icc, low, high, n, k


def feature_icc(table: pd.DataFrame, threshold: float = ROBUST_ICC) -> pd.DataFrame:
    """ICC(1,1) per feature of a :func:`perturbed_features` table (or several courses' tables
    concatenated): each (course_key, roi_name, source) a subject, each perturbation a rater.

    Columns ``feature, icc, ci_low, ci_high`` (95 %), ``n_subjects, n_raters`` (after dropping
    subjects with a non-finite value), ``robust`` (``icc >= threshold``). Module docstring: why
    this form.
    """
    subject = table[ID_COLUMNS].astype(str).agg("|".join, axis=1)
    rows = []
    for feature in feature_columns(table):
        values = pd.to_numeric(table[feature], errors="coerce")
        long = pd.DataFrame({"subject": subject, "rater": table["perturbation"], "value": values})
        icc, low, high, n, k = _icc_1_1(long)
        rows.append((feature, icc, low, high, n, k, bool(icc >= threshold)))
    return pd.DataFrame(rows, columns=ICC_COLUMNS)


def robustness_table(
    image_path: Path | str,
    masks: Mapping[str, Path | str],
    settings: RadiomicsSettings,
    n_perturbations: int = 10,
    seed: int = 0,
    perturbation: PerturbationSettings | None = None,
    threshold: float = ROBUST_ICC,
    course_key: str = "",
    source: str = "manual",
    workers: int = 1,
    sequential: bool = True,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """:func:`feature_icc` of one course's ROIs (at least two, for subjects to differ): the ICC
    table and a summary ``{n_rois, n_perturbations, seed, threshold, icc_form, n_features,
    n_robust, failures, perturbation}``."""
    options = perturbation or PerturbationSettings()
    perturbed, failures = perturbed_features(
        image_path, masks, settings, n_perturbations, seed, options, course_key, source, workers, sequential
    )
    icc = feature_icc(perturbed, threshold)
    summary = {
        "n_rois": int(perturbed["roi_name"].nunique()) if not perturbed.empty else 0,
        "n_perturbations": n_perturbations,
        "seed": seed,
        "threshold": threshold,
        "icc_form": ICC_FORM,
        "n_features": len(icc),
        "n_robust": int(icc["robust"].sum()),
        "failures": failures,
        "perturbation": asdict(options),
    }
    return icc, summary
