"""The pipeline's settings: one typed object, read in one place.

Every knob of the pipeline (where the data lives, the drop folder and its quiet period, how many
workers, TotalSegmentator, radiomics, custom models, crops, the DICOM receiver) is a field of :class:`Settings`.
It is built, lowest precedence first, from

1. the defaults below;
2. a YAML file: the path given to :func:`load_settings`, else ``$RT_SETTINGS``, else
   ``$DAGSTER_HOME/rtpipeline.yaml`` when it exists (``rtpipeline run`` writes the settings of
   its last run there, so the code location a daemon loads for that instance sees the same data
   root);
3. environment variables (``RT_DATA_ROOT``, ``RT_DROP_ROOT``, ... listed in :data:`ENV_FIELDS`),
   for ``dagster dev`` and container deployments;
4. explicit overrides (the CLI's options).

This module is the only place that reads those variables. The rest of the code receives a
``Settings`` (or the Dagster resources built from it); the CLI hands its settings to the runs it
submits as run config, never through its own environment.

Secrets never travel as values: the TotalSegmentator licence key is named by an environment
variable (``totalsegmentator.license_env``) or a file (``license_file``), read in the step that
needs it, so neither the UI, the run config nor a command line shows it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SETTINGS_ENV = "RT_SETTINGS"  #: a YAML settings file
INSTANCE_SETTINGS_FILE = "rtpipeline.yaml"  #: in $DAGSTER_HOME: the settings of the instance's last CLI run
LICENSE_ENV_DEFAULT = "RT_TOTALSEG_LICENSE"


class SettingsError(ValueError):
    """Settings that cannot be used; the message names the file or variable and the field."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TotalSegmentatorSettings(_Section):
    """TotalSegmentator (the CLI's --totalseg-* options); weights under ``home``."""

    home: str = Field(default="", description="TOTALSEG_HOME_DIR (default ~/.totalsegmentator)")
    task: str = Field(default="total", description="TotalSegmentator task")
    fast: bool = Field(default=False, description="the fast (3 mm) models")
    roi_subset: list[str] = Field(default_factory=list, description="only these classes")
    device: Literal["gpu", "cpu"] = Field(default="gpu", description="device of TotalSegmentator and custom models")
    license_env: str = Field(
        default=LICENSE_ENV_DEFAULT, description="name of the environment variable holding the licence key"
    )
    license_file: str = Field(default="", description="file holding the licence key (instead of license_env)")
    backend: Literal["totalsegmentator", "standin"] = Field(
        default="totalsegmentator",
        description="totalsegmentator: the official weights under `home`; standin: organ-shaped masks with "
        "TotalSegmentator's class names, for installations without weights (demos, tests, benchmarks)",
    )
    standin_seconds: float = Field(default=0.0, ge=0, description="the stand-in's simulated inference time (s)")
    worker_idle_s: float = Field(
        default=600.0, gt=0, description="a segmentation worker with no request for this long exits (s)"
    )
    inference_timeout_s: float = Field(
        default=3600.0, gt=0, description="one inference; past it the worker is taken as hung and killed (s)"
    )


class RadiomicsSettings(_Section):
    """pyradiomics: parameter files, backend, pool size, sequential mode, robustness."""

    params: str = Field(default="", description="parameter YAML for CT (empty: the shipped CT.yaml)")
    mr_params: str = Field(default="", description="parameter YAML for MR (empty: the shipped MR.yaml)")
    pet_params: str = Field(default="", description="parameter YAML for PET SUV images (empty: the shipped PET.yaml)")
    workers: int = Field(default=0, ge=0, description="worker processes (0: the pipeline's workers)")
    sequential: bool = Field(default=False, description="one ROI at a time, in process")
    backend: Literal["pyradiomics", "fastrad", "auto"] = Field(
        default="pyradiomics",
        description="who computes the feature classes: pyradiomics, fastrad (torch; CUDA when present), "
        "auto (fastrad with a CUDA device, else pyradiomics); preprocessing is pyradiomics' in every case",
    )
    robustness: int = Field(
        default=0, ge=0, le=100, description="perturbations per ROI for radiomics_robustness (0: off; 2 at least)"
    )
    robustness_threshold: float = Field(
        default=0.90, gt=0, le=1, description="ICC at or above which a feature is robust"
    )
    policy: Literal["default", "full", "basic"] = Field(
        default="default",
        description="which ROIs get the full parameter set (rt_resources/radiomics/policy.py): default: the "
        "ROIs of full_sources, the ROIs named in full_rois and MR ROIs; the others (auto-segmented organs) get "
        "basic_params; full: every ROI; basic: every CT ROI gets basic_params. Very large ROIs (BODY) get the "
        "light parameters (CT_light.yaml) and MR ROIs mr_params in every policy",
    )
    full_sources: list[str] = Field(
        default_factory=lambda: list(RadiomicsSettings._policy_defaults().DEFAULT_FULL_SOURCES),
        description="mask sources (masks/<source>/) whose every ROI gets the full set under the default policy",
    )
    full_rois: list[str] = Field(
        default_factory=lambda: list(RadiomicsSettings._policy_defaults().DEFAULT_FULL_ROIS),
        description="ROI names that get the full set under the default policy, whatever their source "
        "(TotalSegmentator v2 'total' class names by default: organs at risk of RT outcome studies); "
        "case-insensitive, shell patterns allowed (lung_*)",
    )
    basic_params: str = Field(
        default="",
        description="parameter YAML of the basic set (empty: the shipped CT_basic.yaml: original image, "
        "first-order and shape, CT.yaml's resampling and bins); keep its setting block equal to params'",
    )
    light_params: str = Field(
        default="",
        description="parameter YAML of the light set for very large ROIs such as BODY (empty: the shipped "
        "CT_light.yaml: original image at 3 mm, all seven feature classes)",
    )

    @field_validator("robustness")
    @classmethod
    def _two_raters(cls, value: int) -> int:
        if value == 1:
            raise ValueError("an ICC needs at least 2 perturbations per ROI (0 turns robustness off)")
        return value

    @field_validator("full_sources", "full_rois")
    @classmethod
    def _names(cls, value: list[str]) -> list[str]:
        names = [v.strip() for v in value]
        if any(not n for n in names):
            raise ValueError("an empty name (remove it, or the list's stray comma)")
        return names

    @staticmethod
    def _policy_defaults():
        """The radiomics policy module (imported on use; it holds the default lists and their reasons)."""
        from rt_resources.radiomics import policy

        return policy


class SegmentationSettings(_Section):
    """Custom nnU-Net models, custom structures and anatomical crops."""

    models_dir: str = Field(default="", description="folder of custom nnU-Net models (model.yaml each)")
    custom_structures: str = Field(default="", description="YAML file of boolean structure combinations")
    crop_regions: list[str] = Field(default_factory=list, description="regions to crop to (default: all found)")


class ScienceSettings(_Section):
    """Cohort science: standard structure names, radiobiology, auto-vs-manual agreement."""

    roi_names: str = Field(
        default="",
        description="the site's structure-name mapping YAML, extending the shipped TG-263 and TotalSegmentator "
        "tables (rt_resources/naming/tg263.py says the format)",
    )
    alpha_beta: str = Field(
        default="",
        description="the site's alpha/beta YAML, extending the shipped table (rt_resources/dose/data/alpha_beta.yaml)",
    )
    agreement_min_dice: float = Field(
        default=0.7, ge=0, le=1, description="the agreement check flags an organ whose auto contour's Dice is below"
    )


class ReceiveSettings(_Section):
    """The DICOM receiver (``rtpipeline receive``): a C-STORE endpoint that fills the drop folder."""

    ae_title: str = Field(default="RTPIPELINE", min_length=1, max_length=16, description="the receiver's AE title")
    bind: str = Field(default="0.0.0.0", description="address to listen on")
    port: int = Field(default=11112, ge=0, le=65535, description="TCP port (11112: DICOM's registered port)")
    allow: list[str] = Field(
        default_factory=list, description="calling AEs allowed, as AE@HOST or AE (empty: every calling AE)"
    )
    tls_cert: str = Field(default="", description="TLS: the receiver's certificate (PEM)")
    tls_key: str = Field(default="", description="TLS: its private key (PEM)")
    tls_ca: str = Field(default="", description="TLS: CA certificate(s) senders' certificates must chain to")
    stale_after_h: float = Field(
        default=24.0, gt=0, description="hours after which an aborted association's staging folder is reported"
    )
    max_associations: int = Field(default=20, ge=1, description="associations at once")


class CelerySettings(_Section):
    """Celery workers (``step_executor: celery``): the broker; GPU steps go to queue ``gpu``
    (one worker per GPU), the rest to ``cpu_queue``."""

    broker: str = Field(default="redis://127.0.0.1:6379/0", description="Celery broker URL (Redis)")
    backend: str = Field(default="", description="Celery result backend URL (empty: the broker)")
    cpu_queue: str = Field(default="cpu", description="queue of every step but those on a GPU (queue gpu)")


class GpuSettings(_Section):
    """The GPUs of one machine that segmentation steps lease, one device per step."""

    devices: list[str] = Field(
        default_factory=list,
        description="devices to lease, e.g. [0, 1] (CUDA indices); empty: every CUDA device seen, else one",
    )
    per_device: int = Field(default=1, ge=1, le=16, description="segmentations at once on one device")
    prefetch: int = Field(
        default=1,
        ge=0,
        le=8,
        description="GPU steps beyond the slots that may wait at the device lease with their input ready, "
        "so the next inference starts the moment one ends (0: the next GPU run launches only then)",
    )


class Settings(_Section):
    """Everything the pipeline can be told. Paths are stored absolute once loaded."""

    data_root: str = Field(default="rt_data", description="folder holding courses/, cohort/ and the drop index")
    drop_root: str = Field(default="", description="drop folder DICOM lands in (read only)")
    key_map: str = Field(
        default="",
        description="the key map: course key -> PatientID, name, study UIDs (mode 0600; empty: "
        "<data_root>/cohort/courses.parquet); put it outside the data root to keep that free of identifiers",
    )
    state_dir: str = Field(
        default="",
        description="machine-local state: the drop index, the request ledger, locks (empty: <data_root>/index, "
        "or a local folder when the data root is on a network file system)",
    )
    worker_data_root: str = Field(
        default="",
        description="this machine's mount of the shared data root, where it differs from the path runs "
        "are given (a Celery/k8s worker); read where a step runs, never sent as run config",
    )
    worker_drop_root: str = Field(
        default="",
        description="this machine's mount of the drop, where it differs (manifests list drop-relative paths)",
    )
    drop_full_rescan_s: float = Field(
        default=3600.0,
        ge=0,
        description="seconds between full re-stats of the drop (catches files overwritten in place in "
        "unchanged folders); ticks in between re-read only folders whose mtime changed (0: every tick)",
    )
    drop_watch: bool = Field(
        default=True,
        description="the sensor's quick scans ask Linux inotify which folders changed instead of a stat per "
        "folder (off by itself on network file systems; see rt_resources.ingest.watch)",
    )
    quiet_period_s: float = Field(default=60.0, ge=0, description="seconds without change before a course starts")
    sensor_interval_s: int = Field(default=30, ge=1, description="seconds between scans of the drop and automation")
    workers: int = Field(
        default=0, ge=0, description="CPU workers of a run: steps at once and pool size (0: cores - 1)"
    )
    step_executor: Literal["auto", "multiprocess", "in_process", "celery", "k8s"] = Field(
        default="auto",
        description="auto: in process with one worker, else multiprocess; celery: steps on Celery workers "
        "(GPU steps on queue gpu, the rest on celery.cpu_queue); k8s: one Kubernetes job per step; "
        "celery and k8s need an instance every worker reaches (Postgres)",
    )
    step_start_method: Literal["forkserver", "spawn"] = Field(default="forkserver")
    priority: Literal["size", "fifo"] = Field(
        default="size", description="run priority: small courses first (size) or in order of arrival (fifo)"
    )
    totalsegmentator: TotalSegmentatorSettings = Field(default_factory=TotalSegmentatorSettings)
    radiomics: RadiomicsSettings = Field(default_factory=RadiomicsSettings)
    segmentation: SegmentationSettings = Field(default_factory=SegmentationSettings)
    science: ScienceSettings = Field(default_factory=ScienceSettings)
    receive: ReceiveSettings = Field(default_factory=ReceiveSettings)
    celery: CelerySettings = Field(default_factory=CelerySettings)
    gpu: GpuSettings = Field(default_factory=GpuSettings)

    def cpu_workers(self) -> int:
        """The run's CPU workers: ``workers`` if set, else CPU cores - 1 (one core stays for the
        orchestrating process, the daemon and the UI), at least 1."""
        return self.workers or max(1, (os.cpu_count() or 2) - 1)

    def public(self) -> dict[str, Any]:
        """The settings as plain data; holds no secret (the licence key is only named)."""
        return self.model_dump(mode="json")


#: environment variable -> (dotted field, kind); kind "list" splits on commas, "bool" takes 1/true/yes
ENV_FIELDS: dict[str, tuple[str, str]] = {
    "RT_DATA_ROOT": ("data_root", "path"),
    "RT_DROP_ROOT": ("drop_root", "path"),
    "RT_KEY_MAP": ("key_map", "path"),
    "RT_STATE_DIR": ("state_dir", "path"),
    "RT_WORKER_DATA_ROOT": ("worker_data_root", "path"),
    "RT_WORKER_DROP_ROOT": ("worker_drop_root", "path"),
    "RT_DROP_FULL_RESCAN_S": ("drop_full_rescan_s", "str"),
    "RT_DROP_WATCH": ("drop_watch", "bool"),
    "RT_QUIET_PERIOD_S": ("quiet_period_s", "str"),
    "RT_SENSOR_INTERVAL_S": ("sensor_interval_s", "str"),
    "RT_WORKERS": ("workers", "str"),
    "RT_STEP_EXECUTOR": ("step_executor", "str"),
    "RT_STEP_START_METHOD": ("step_start_method", "str"),
    "RT_PRIORITY": ("priority", "str"),
    "TOTALSEG_HOME_DIR": ("totalsegmentator.home", "path"),
    "RT_TOTALSEG_TASK": ("totalsegmentator.task", "str"),
    "RT_TOTALSEG_FAST": ("totalsegmentator.fast", "bool"),
    "RT_TOTALSEG_ROI_SUBSET": ("totalsegmentator.roi_subset", "list"),
    "RT_TOTALSEG_DEVICE": ("totalsegmentator.device", "str"),
    "RT_TOTALSEG_LICENSE_FILE": ("totalsegmentator.license_file", "path"),
    "RT_TOTALSEG_BACKEND": ("totalsegmentator.backend", "str"),
    "RT_TOTALSEG_STANDIN_S": ("totalsegmentator.standin_seconds", "str"),
    "RT_SEG_WORKER_IDLE_S": ("totalsegmentator.worker_idle_s", "str"),
    "RT_SEG_INFERENCE_TIMEOUT_S": ("totalsegmentator.inference_timeout_s", "str"),
    "RT_RADIOMICS_PARAMS": ("radiomics.params", "path"),
    "RT_RADIOMICS_MR_PARAMS": ("radiomics.mr_params", "path"),
    "RT_RADIOMICS_PET_PARAMS": ("radiomics.pet_params", "path"),
    "RT_RADIOMICS_WORKERS": ("radiomics.workers", "str"),
    "RT_SEQUENTIAL_RADIOMICS": ("radiomics.sequential", "bool"),
    "RT_RADIOMICS_BACKEND": ("radiomics.backend", "str"),
    "RT_RADIOMICS_ROBUSTNESS": ("radiomics.robustness", "str"),
    "RT_RADIOMICS_POLICY": ("radiomics.policy", "str"),
    "RT_RADIOMICS_FULL_SOURCES": ("radiomics.full_sources", "list"),
    "RT_RADIOMICS_FULL_ROIS": ("radiomics.full_rois", "list"),
    "RT_RADIOMICS_BASIC_PARAMS": ("radiomics.basic_params", "path"),
    "RT_RADIOMICS_LIGHT_PARAMS": ("radiomics.light_params", "path"),
    "RT_MODELS_DIR": ("segmentation.models_dir", "path"),
    "RT_CUSTOM_STRUCTURES": ("segmentation.custom_structures", "path"),
    "RT_CROP_REGIONS": ("segmentation.crop_regions", "list"),
    "RT_ROI_NAMES": ("science.roi_names", "path"),
    "RT_ALPHA_BETA": ("science.alpha_beta", "path"),
    "RT_AGREEMENT_MIN_DICE": ("science.agreement_min_dice", "str"),
    "RT_RECEIVE_AE_TITLE": ("receive.ae_title", "str"),
    "RT_RECEIVE_BIND": ("receive.bind", "str"),
    "RT_RECEIVE_PORT": ("receive.port", "str"),
    "RT_RECEIVE_ALLOW": ("receive.allow", "list"),
    "RT_RECEIVE_TLS_CERT": ("receive.tls_cert", "path"),
    "RT_RECEIVE_TLS_KEY": ("receive.tls_key", "path"),
    "RT_RECEIVE_TLS_CA": ("receive.tls_ca", "path"),
    "RT_RECEIVE_STALE_AFTER_H": ("receive.stale_after_h", "str"),
    "RT_RECEIVE_MAX_ASSOCIATIONS": ("receive.max_associations", "str"),
    "RT_CELERY_BROKER": ("celery.broker", "str"),
    "RT_CELERY_BACKEND": ("celery.backend", "str"),
    "RT_GPU_DEVICES": ("gpu.devices", "list"),
    "RT_SEGMENTATIONS_PER_GPU": ("gpu.per_device", "str"),
    "RT_GPU_PREFETCH": ("gpu.prefetch", "str"),
}
#: fields holding paths: made absolute when loaded, so a run started elsewhere sees the same files
PATH_FIELDS = [field for field, kind in ENV_FIELDS.values() if kind == "path"]


def _set(tree: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    for p in parents:
        tree = tree.setdefault(p, {})
    tree[leaf] = value


def _get(tree: Mapping, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, Mapping) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _merge(base: dict, update: Mapping) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _from_env(environ: Mapping[str, str]) -> dict:
    tree: dict = {}
    for name, (dotted, kind) in ENV_FIELDS.items():
        raw = environ.get(name, "")
        if raw == "":
            continue
        if kind == "bool":
            value: Any = raw.strip().lower() in ("1", "true", "yes", "on")
        elif kind == "list":
            value = [v.strip() for v in raw.split(",") if v.strip()]
        else:
            value = raw
        _set(tree, dotted, value)
    return tree


def settings_file(environ: Mapping[str, str] | None = None) -> Path | None:
    """The YAML file settings are read from: ``$RT_SETTINGS``, else the instance's
    ``$DAGSTER_HOME/rtpipeline.yaml`` when it exists, else none."""
    environ = os.environ if environ is None else environ
    if environ.get(SETTINGS_ENV):
        return Path(environ[SETTINGS_ENV])
    home = environ.get("DAGSTER_HOME", "")
    if home and (Path(home) / INSTANCE_SETTINGS_FILE).is_file():
        return Path(home) / INSTANCE_SETTINGS_FILE
    return None


def _read_yaml(path: Path) -> dict:
    try:
        doc = yaml.safe_load(Path(path).read_text()) or {}
    except OSError as exc:
        raise SettingsError(f"settings file {path}: cannot be read: {exc}") from exc
    except yaml.YAMLError as exc:
        raise SettingsError(f"settings file {path}: not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise SettingsError(f"settings file {path}: expected a mapping of settings, found {type(doc).__name__}")
    return doc


def _absolute(tree: dict, base: Path) -> dict:
    for dotted in PATH_FIELDS:
        value = _get(tree, dotted)
        if value:
            _set(tree, dotted, str((base / Path(value).expanduser()).resolve()))
    return tree


def load_settings(
    path: Path | str | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Defaults < YAML file < environment < ``overrides`` (a nested mapping, e.g. from the CLI).

    Relative paths in the file are taken relative to the file's folder; relative paths from the
    environment or the overrides relative to the working directory. Raises :class:`SettingsError`
    naming the source of a bad value."""
    environ = os.environ if environ is None else environ
    file = Path(path) if path else settings_file(environ)
    layers: list[tuple[str, dict]] = []
    if file is not None:
        layers.append((f"settings file {file}", _absolute(_read_yaml(file), file.resolve().parent)))
    layers.append(("environment", _absolute(_from_env(environ), Path.cwd())))
    if overrides:
        layers.append(("options", _absolute(_merge({}, overrides), Path.cwd())))
    merged: dict = {}
    for source, layer in layers:
        try:  # validate each layer on its own first, so an error names where the value came from
            Settings.model_validate(_merge(merged, layer))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" + _env_hint(e["loc"]) for e in exc.errors()
            )
            raise SettingsError(f"{source}: {problems}") from None
        merged = _merge(merged, layer)
    settings = Settings.model_validate(merged)
    if not Path(settings.data_root).is_absolute():
        settings = settings.model_copy(update={"data_root": str(Path(settings.data_root).resolve())})
    return settings


def _env_hint(loc: tuple) -> str:
    dotted = ".".join(str(p) for p in loc)
    names = [name for name, (field, _) in ENV_FIELDS.items() if field == dotted]
    return f" (environment variable {names[0]})" if names else ""


def write_settings(settings: Settings, path: Path) -> Path:
    """Write ``settings`` as YAML (atomically), for a code location to read back."""
    from rt_resources.fileio import write_atomic

    text = "# written by rtpipeline run: the settings of this instance's last CLI run\n" + yaml.safe_dump(
        settings.public(), sort_keys=False
    )
    return write_atomic(Path(path), lambda tmp: tmp.write_text(text))


def read_license_key(settings: TotalSegmentatorSettings, environ: Mapping[str, str] | None = None) -> str:
    """The TotalSegmentator licence key, read where the settings say (file, else variable), or ""."""
    environ = os.environ if environ is None else environ
    if settings.license_file:
        try:
            return Path(settings.license_file).read_text().strip()
        except OSError as exc:
            raise SettingsError(f"TotalSegmentator licence file {settings.license_file}: {exc}") from exc
    return environ.get(settings.license_env, "").strip() if settings.license_env else ""
