"""Radiomics feature backends: pyradiomics (the reference) and fastrad (torch; it pays on a GPU).

Both backends run pyradiomics' own preprocessing (``radiomics.imageoperations``: mask checks,
normalisation, resampling, LoG and wavelet images, cropping to the ROI), so both see the same voxels.
The fastrad backend is a :class:`radiomics.featureextractor.RadiomicsFeatureExtractor` whose
``computeShape``/``computeFeatures`` hand the cropped arrays of each image type to fastrad's torch
code and rename its snake_case names to pyradiomics' (``glcm:joint_energy`` ->
``original_glcm_JointEnergy``), in pyradiomics' order: the features table keeps its columns.

Parity (``tests/radiomics/test_backends.py``: the IBSI digital phantom, synthetic ROIs with LoG and
wavelet images, STS_001's GTV) is every feature within :data:`PARITY_REL` relative, measured with
fastrad 1.0.0. fastrad computes shape, glcm, glrlm, glszm, gldm and ngtdm; pyradiomics computes a
class wherever that does not hold, and the ROI's :class:`BackendRecord` says which and why:

* **firstorder, always** (:data:`PARITY_EXCEPTIONS`): fastrad's Median is ``torch.median``, the lower
  of the two middle values for an even voxel count where numpy averages them (41 against 41.5
  measured on a synthetic ROI), and its percentiles are computed in float32 (1.4e-6 relative on a
  wavelet image). pyradiomics' firstorder is vectorised numpy and costs milliseconds.
* **glrlm on an ROI one voxel thick along an axis**: pyradiomics drops the 9 directions that leave
  that plane, fastrad counts each voxel there as a run of length 1 (RunLengthNonUniformity 70.1
  against 45.6 measured on a one-slice ROI).
* **shape when fastrad's vertex-distance matrices do not fit**: fastrad materialises N x N matrices
  of the N mesh vertices, about :data:`SHAPE_BYTES_PER_VERTEX_PAIR` bytes per pair (9.2 GB peak
  and 29 s on 2 CPU cores for STS_001's GTV, N = 22,080); over ``memory_fraction`` of the free
  memory of the device, pyradiomics' C code does it (O(N) memory).
* **settings fastrad does not implement**: ``binCount`` (fastrad bins by width only),
  ``distances`` other than [1], ``symmetricalGLCM: false``, ``weightingNorm``, ``gldm_a`` other
  than 0, ``force2D``, voxel-based extraction; classes fastrad lacks (shape2D) and features it lacks
  (pyradiomics' deprecated glcm Dissimilarity, Homogeneity1/2, SumVariance, gldm DependencePercentage).
* **a degenerate ROI** for which fastrad returns no value for a class.

Values at round-off level compare with the absolute floor :data:`PARITY_ABS`: for an ROI of one
gray level pyradiomics gives entropies of -3.2e-16 (it takes log2(p + eps)), fastrad exactly 0.

CUDA out of memory anywhere in an ROI: the ROI is extracted again with fastrad on the CPU and its
record says so (``cuda_oom``). Heavy imports (numpy, SimpleITK, radiomics, torch, fastrad) happen
inside the functions, so that a spawned pool worker limits its thread pools first.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

log = logging.getLogger("rtpipeline.radiomics")

#: parity tolerance between the backends: relative, with an absolute floor for round-off-level values
PARITY_REL = 1e-6
PARITY_ABS = 1e-12
#: classes fastrad computes in this backend (others, and the exceptions below, are pyradiomics')
FASTRAD_CLASSES = ("shape", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
#: fastrad classes whose values differ from pyradiomics' beyond PARITY_REL: always pyradiomics
PARITY_EXCEPTIONS = {
    "firstorder": (
        "fastrad 1.0.0 firstorder differs from pyradiomics: Median is torch.median (lower middle value "
        "for an even voxel count, numpy averages the two) and percentiles are computed in float32"
    ),
}
#: bytes per vertex pair of fastrad's shape (float64 distances, a masked copy, boolean masks); measured
#: 9.2 GB peak RSS for 22,080 vertices
SHAPE_BYTES_PER_VERTEX_PAIR = 20


class Backend(StrEnum):
    """Which code computes the feature classes (preprocessing is always pyradiomics')."""

    PYRADIOMICS = "pyradiomics"
    """pyradiomics for every class, on the CPU: the reference."""
    FASTRAD = "fastrad"
    """fastrad (torch) for the classes with proven parity, on CUDA when this process sees a device,
    else on the CPU (7-16x slower than pyradiomics there, benchmarks/results/radiomics_backends_2core.txt:
    for parity checks and benchmarks)."""
    AUTO = "auto"
    """fastrad when this process sees a CUDA device, else pyradiomics."""


def parse_backend(value: str) -> Backend:
    """``value`` as a :class:`Backend`; a ValueError names the choices."""
    try:
        return Backend(str(value).lower())
    except ValueError:
        choices = " | ".join(b.value for b in Backend)
        raise ValueError(f"radiomics backend {value!r} is not one of {choices}") from None


def cuda_available() -> bool:
    """Whether torch sees a CUDA device in this process."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_backend(backend: str) -> tuple[Backend, str]:
    """The backend and torch device that ``backend`` means here: ``(PYRADIOMICS, "cpu")``,
    ``(FASTRAD, "cuda")`` or ``(FASTRAD, "cpu")``. ``auto`` and ``fastrad`` use CUDA when present."""
    choice = parse_backend(backend)
    if choice is Backend.PYRADIOMICS:
        return choice, "cpu"
    cuda = cuda_available()
    if choice is Backend.AUTO and not cuda:
        return Backend.PYRADIOMICS, "cpu"
    return Backend.FASTRAD, "cuda" if cuda else "cpu"


def relative_difference(a: float, b: float) -> float:
    """``|a - b| / max(|a|, |b|)``, 0 where both are equal, NaN-equal, or below :data:`PARITY_ABS`."""
    import math

    if a == b or (math.isnan(a) and math.isnan(b)) or abs(a - b) <= PARITY_ABS:
        return 0.0
    return abs(a - b) / max(abs(a), abs(b))


@dataclass
class BackendRecord:
    """Where one ROI's features were computed: JSON-ready with :meth:`as_dict`."""

    backend: str  #: the backend that ran (``auto`` resolved)
    device: str = "cpu"  #: torch device of the fastrad classes
    fastrad: list[str] = field(default_factory=list)  #: classes fastrad computed (for at least one image type)
    pyradiomics: dict[str, str] = field(default_factory=dict)  #: class -> why pyradiomics computed it
    cuda_oom: str | None = None  #: the CUDA out-of-memory error, when the ROI was redone on the CPU

    def used_fastrad(self, feature_class: str) -> None:
        if feature_class not in self.fastrad:
            self.fastrad.append(feature_class)

    def fell_back(self, feature_class: str, reason: str) -> None:
        if feature_class not in self.pyradiomics:
            self.pyradiomics[feature_class] = reason
            log.debug("radiomics: %s by pyradiomics: %s", feature_class, reason)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- names


def _norm(name: str) -> str:
    """Name key shared by both libraries: ``10th_percentile`` and ``10Percentile`` -> ``10percentile``."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    return re.sub(r"^(\d+)th", r"\1", key)


@functools.cache
def pyradiomics_names(feature_class: str) -> dict[str, bool]:
    """pyradiomics' feature names of a class, in its order, -> deprecated."""
    from radiomics import getFeatureClasses

    return dict(getFeatureClasses()[feature_class].getFeatureNames())


def wanted_names(feature_class: str, enabled: list[str] | None) -> list[str]:
    """The features pyradiomics computes for a class enabled with ``enabled`` names, in its order:
    the listed ones, or (none listed) every one that is not deprecated."""
    if enabled:
        return list(enabled)
    return [name for name, deprecated in pyradiomics_names(feature_class).items() if not deprecated]


def rename(feature_class: str, values: Mapping[str, float]) -> dict[str, float]:
    """fastrad's ``<class>:<snake_name>`` values under pyradiomics' names (``glcm:idmn`` -> ``Idmn``);
    names pyradiomics lacks are dropped."""
    by_key = {_norm(name): name for name in pyradiomics_names(feature_class)}
    out = {}
    for key, value in values.items():
        name = by_key.get(_norm(key.split(":", 1)[-1]))
        if name is not None:
            out[name] = float(value)
    return out


# --------------------------------------------------------------------------- support checks


def settings_blocker(feature_class: str, settings: Mapping[str, Any]) -> str | None:
    """Why fastrad cannot compute ``feature_class`` under these pyradiomics settings (None: it can)."""
    if feature_class in PARITY_EXCEPTIONS:
        return PARITY_EXCEPTIONS[feature_class]
    if feature_class not in FASTRAD_CLASSES:
        return f"fastrad has no {feature_class} class"
    if settings.get("force2D"):
        return "force2D: fastrad computes 3D features only"
    if feature_class == "shape":
        return None
    if settings.get("binCount") is not None:
        return "binCount: fastrad discretises by binWidth only"
    if feature_class in ("glcm", "gldm", "ngtdm") and list(settings.get("distances", [1])) != [1]:
        return f"distances {settings.get('distances')}: fastrad uses distance 1 only"
    if feature_class == "glcm" and not settings.get("symmetricalGLCM", True):
        return "symmetricalGLCM false: fastrad's GLCM is symmetrical"
    if feature_class in ("glcm", "glrlm") and settings.get("weightingNorm") is not None:
        return f"weightingNorm {settings.get('weightingNorm')!r}: fastrad does not weight directions"
    if feature_class == "gldm" and settings.get("gldm_a", 0) != 0:
        return f"gldm_a {settings.get('gldm_a')}: fastrad counts equal gray levels only (alpha 0)"
    return None


def data_blocker(feature_class: str, mask_shape: tuple[int, ...]) -> str | None:
    """Why fastrad's values would differ on an ROI whose cropped bounding box is ``mask_shape`` (z, y, x)."""
    if feature_class == "glrlm" and min(mask_shape) < 2:
        return (
            f"ROI one voxel thick (bounding box {tuple(int(s) for s in mask_shape)}): pyradiomics drops "
            "the directions leaving the plane, fastrad counts them as runs of length 1"
        )
    return None


def shape_vertex_count(mask_array: Any) -> int:
    """Vertices of the marching-cubes mesh of a binary (z, y, x) mask: one per edge of the voxel
    lattice between an ROI voxel and a background voxel (the mask padded by one voxel)."""
    import numpy as np

    padded = np.pad(np.asarray(mask_array, dtype=bool), 1)
    return int(sum(np.count_nonzero(np.diff(padded, axis=axis)) for axis in range(padded.ndim)))


def free_memory_bytes(device: str) -> int:
    """Free memory of the torch device: CUDA's free memory, or the host's available memory."""
    if device.startswith("cuda"):
        import torch

        return int(torch.cuda.mem_get_info()[0])
    from rt_resources.pool_memory import available_memory_bytes

    return available_memory_bytes()  # the host's, or less under a cgroup limit


def shape_memory_blocker(mask_array: Any, device: str, memory_fraction: float) -> str | None:
    """Why fastrad's shape would not fit in ``memory_fraction`` of the device's free memory."""
    n = shape_vertex_count(mask_array)
    need = SHAPE_BYTES_PER_VERTEX_PAIR * n * n
    free = free_memory_bytes(device)
    if need <= memory_fraction * free:
        return None
    return (
        f"fastrad shape needs about {need / 2**30:.1f} GiB ({n} mesh vertices: N x N distance matrices), "
        f"more than {memory_fraction:.0%} of the {free / 2**30:.1f} GiB free on {device}"
    )


# --------------------------------------------------------------------------- the fastrad extractor


@functools.cache
def _fastrad_extractor_class() -> type:
    """The extractor class (defined on first use: it subclasses pyradiomics' extractor)."""
    import numpy as np
    import SimpleITK as sitk
    import torch
    from fastrad import FeatureSettings
    from fastrad import features as fr
    from radiomics import featureextractor, imageoperations

    compute = {
        "shape": fr.compute_shape,
        "glcm": fr.compute_glcm,
        "glrlm": fr.compute_glrlm,
        "glszm": fr.compute_glszm,
        "gldm": fr.compute_gldm,
        "ngtdm": fr.compute_ngtdm,
    }

    class FastradFeatureExtractor(featureextractor.RadiomicsFeatureExtractor):
        """pyradiomics' extractor with fastrad computing the classes it reproduces (module docstring)."""

        def __init__(self, params: str, device: str = "cpu", memory_fraction: float = 0.5) -> None:
            super().__init__(params)
            self.device = device
            self.memory_fraction = memory_fraction
            self.record = BackendRecord(Backend.FASTRAD.value, device)
            self._voxel_based = False

        def execute(self, imageFilepath, maskFilepath, label=None, label_channel=None, voxelBased=False):  # noqa: N803
            self.record = BackendRecord(Backend.FASTRAD.value, self.device)
            self._voxel_based = bool(voxelBased)
            return super().execute(imageFilepath, maskFilepath, label, label_channel, voxelBased)

        # -- helpers

        @contextlib.contextmanager
        def _only(self, classes: list[str]) -> Iterator[None]:
            """pyradiomics computes only ``classes`` inside the block."""
            enabled = self.enabledFeatures
            self.enabledFeatures = OrderedDict((c, n) for c, n in enabled.items() if c in classes)
            try:
                yield
            finally:
                self.enabledFeatures = enabled

        def _to_device(self, array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
            return torch.from_numpy(np.ascontiguousarray(array)).to(dtype=dtype, device=self.device)

        def _run(self, feature_class: str, image: np.ndarray, mask: np.ndarray, spacing, settings) -> dict:
            """fastrad's raw values of one class on (z, y, x) arrays."""
            options = FeatureSettings(
                feature_classes=[feature_class],
                bin_width=float(settings.get("binWidth", 25)),
                device=self.device,
                spacing=tuple(float(s) for s in spacing),
            )
            # fastrad's GLSZM prints a line per gray level when CuPy is missing on CUDA
            quiet = contextlib.redirect_stdout(io.StringIO()) if self.device != "cpu" else contextlib.nullcontext()
            with torch.no_grad(), quiet:
                return compute[feature_class](
                    image_tensor=self._to_device(image, torch.float64),
                    mask_tensor=self._to_device(mask, torch.float32),
                    settings=options,
                )

        def _fastrad_class(self, feature_class, names, image, mask, spacing, settings, where) -> dict | None:
            """pyradiomics-named values of one class, or None (recorded) when fastrad cannot give them all."""
            raw = self._run(feature_class, image, mask, spacing, settings)
            values = rename(feature_class, raw)
            missing = [n for n in names if n not in values]
            if missing:
                shown = ", ".join(missing[:4]) + (" ..." if len(missing) > 4 else "")
                lacks = "no value" if not raw else "no " + shown
                self.record.fell_back(feature_class, f"{where}: fastrad gives {lacks}")
                return None
            self.record.used_fastrad(feature_class)
            return {n: values[n] for n in names}

        @staticmethod
        def _arrays(image, mask, label) -> tuple[np.ndarray, np.ndarray, tuple[float, ...]]:
            mask_array = (sitk.GetArrayFromImage(mask) == label).astype(np.float32)
            image_array = sitk.GetArrayFromImage(image).astype(np.float64) if image is not None else None
            return image_array, mask_array, tuple(reversed(mask.GetSpacing()))

        # -- pyradiomics' hooks

        def computeShape(self, image, mask, boundingBox, **kwargs):  # noqa: N802, N803
            enabled = self.enabledFeatures
            if "shape" not in enabled:
                return super().computeShape(image, mask, boundingBox, **kwargs)
            reason = settings_blocker("shape", kwargs)
            cropped_image, cropped_mask = imageoperations.cropToTumorMask(image, mask, boundingBox)
            _, mask_array, spacing = self._arrays(None, cropped_mask, kwargs.get("label", 1))
            if reason is None:
                reason = shape_memory_blocker(mask_array, self.device, self.memory_fraction)
            if reason is not None:
                self.record.fell_back("shape", reason)
                return super().computeShape(image, mask, boundingBox, **kwargs)
            names = wanted_names("shape", enabled["shape"])
            values = self._fastrad_class("shape", names, mask_array, mask_array, spacing, kwargs, "original")
            if values is None:
                return super().computeShape(image, mask, boundingBox, **kwargs)
            vector = OrderedDict((f"original_shape_{n}", v) for n, v in values.items())
            with self._only([c for c in enabled if c != "shape"]):  # shape2D, if enabled
                vector.update(super().computeShape(image, mask, boundingBox, **kwargs))
            return vector

        def computeFeatures(self, image, mask, imageTypeName, **kwargs):  # noqa: N802, N803
            enabled = [c for c in self.enabledFeatures if not c.startswith("shape")]
            if self._voxel_based:
                for feature_class in enabled:
                    self.record.fell_back(feature_class, "voxel-based extraction: fastrad is segment-based only")
                return super().computeFeatures(image, mask, imageTypeName, **kwargs)
            image_array, mask_array, spacing = self._arrays(image, mask, kwargs.get("label", 1))
            fastrad_values: dict[str, dict[str, float]] = {}
            for feature_class in enabled:
                reason = settings_blocker(feature_class, kwargs) or data_blocker(feature_class, mask_array.shape)
                if reason is not None:
                    self.record.fell_back(feature_class, reason)
                    continue
                names = wanted_names(feature_class, self.enabledFeatures[feature_class])
                values = self._fastrad_class(
                    feature_class, names, image_array, mask_array, spacing, kwargs, imageTypeName
                )
                if values is not None:
                    fastrad_values[feature_class] = values
            with self._only([c for c in enabled if c not in fastrad_values]):
                reference = super().computeFeatures(image, mask, imageTypeName, **kwargs)
            vector = OrderedDict()
            for feature_class in enabled:  # pyradiomics' order
                if feature_class in fastrad_values:
                    for name, value in fastrad_values[feature_class].items():
                        vector[f"{imageTypeName}_{feature_class}_{name}"] = value
                else:
                    prefix = f"{imageTypeName}_{feature_class}_"
                    vector.update((k, v) for k, v in reference.items() if k.startswith(prefix))
            return vector

    return FastradFeatureExtractor


_EXTRACTORS: dict[tuple[str, str, str, float], Any] = {}


def extractor(params: Path | str, backend: Backend, device: str = "cpu", memory_fraction: float = 0.5) -> Any:
    """The extractor of ``params`` for a resolved backend, built once per process."""
    key = (str(params), Backend(backend).value, device, float(memory_fraction))
    if key not in _EXTRACTORS:
        import radiomics
        from radiomics import featureextractor

        radiomics.setVerbosity(logging.ERROR)  # its advice ("GLCM is symmetrical ...") once per ROI is noise
        if key[1] == Backend.PYRADIOMICS:
            built = featureextractor.RadiomicsFeatureExtractor(str(params))
        else:
            built = _fastrad_extractor_class()(str(params), device, memory_fraction)
        # the diagnostics_* entries (dropped from every table) hash and label the whole image and
        # mask on every ROI: ~3 CPU-seconds per ROI on a 512 x 512 x 160 CT; features are unchanged
        built.settings["additionalInfo"] = False
        _EXTRACTORS[key] = built
    return _EXTRACTORS[key]


def extract_features(
    image: Any, mask: Any, params: Path | str, backend: str = "pyradiomics", memory_fraction: float = 0.5
) -> tuple[dict[str, float], BackendRecord]:
    """Features of one ROI (SimpleITK image and 0/1 mask) with pyradiomics' names, as floats (no
    ``diagnostics_*``), and where they were computed.

    ``backend`` is a :class:`Backend` value; ``memory_fraction`` is the share of free device memory
    fastrad's shape may take. CUDA out of memory: the ROI is extracted again on the CPU (recorded).
    """
    import numpy as np

    chosen, device = resolve_backend(backend)
    if chosen is Backend.PYRADIOMICS:
        raw = extractor(params, chosen).execute(image, mask)
        record = BackendRecord(Backend.PYRADIOMICS.value)
    else:
        import torch

        run = extractor(params, chosen, device, memory_fraction)
        try:
            raw = run.execute(image, mask)
            record = run.record
        except torch.OutOfMemoryError as exc:
            if device == "cpu":
                raise
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            message = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            log.warning("radiomics: CUDA out of memory (%s); this ROI runs on the CPU", message)
            run = extractor(params, chosen, "cpu", memory_fraction)
            raw = run.execute(image, mask)
            record = run.record
            record.cuda_oom = message
    # pyradiomics' shape takes eigenvalues with numpy.linalg.eig: complex, with ~1e-17 imaginary parts
    # for near-spherical ROIs; the real part is the value
    features = {k: float(np.real(v)) for k, v in raw.items() if not k.startswith("diagnostics_")}
    return features, record
