"""Dagster resources that configure the engines. A deployment swaps these, never asset code.

They are built from one :class:`~rt_resources.settings.Settings` (:func:`resources_from_settings`);
:func:`run_config` gives the same values as run config, which is how ``rtpipeline run`` hands its
options to the runs it submits. Every materialization records the configuration of the resources
it used (:func:`effective_config`), so an audit shows the parameters behind a number.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from rt_resources.course_paths import CoursePaths
from rt_resources.fileio import course_dir
from rt_resources.gpu_leases import GpuConfig
from rt_resources.ingest.survey import DropSurvey, survey_drop
from rt_resources.settings import Settings, read_license_key
from rt_resources.state import ledger_path, state_dir, worker_mounts

DEFAULT_QUIET_PERIOD_S = 60.0


class DataRoot(ConfigurableResource):
    """Where every output lives (``courses/``, ``cohort/``, ``logs/``); ``$RT_DATA_ROOT``. The
    machine-local state (drop index, request ledger, locks) is in :meth:`state` (``$RT_STATE_DIR``)."""

    path: str = Field(description="Folder that holds courses/, cohort/ and logs/")
    key_map: str = Field(default="", description="the key map's file; empty: cohort/courses.parquet")
    state_dir: str = Field(
        default="", description="this machine's state folder (empty: <data root>/index, or local on NFS)"
    )

    @property
    def root(self) -> Path:
        """The data root as this machine mounts it (``RT_WORKER_DATA_ROOT`` on a worker whose mount differs)."""
        return Path(worker_mounts()[0] or self.path).resolve()

    def state(self) -> Path:
        """This machine's state folder: drop index, request ledger, locks (:mod:`rt_resources.state`)."""
        return state_dir(self.root, self.state_dir)

    def ledger(self):
        """The sensor's request ledger (:mod:`rt_resources.ingest.request_ledger`)."""
        from rt_resources.ingest.request_ledger import RequestLedger

        return RequestLedger(ledger_path(self.state()))

    def key_map_path(self) -> Path:
        """Where the key map (course key -> patient) is written: the one identifying file."""
        return Path(self.key_map).resolve() if self.key_map else self.cohort_dir() / "courses.parquet"

    def course_dir(self, key: str) -> Path:
        return course_dir(self.root, key)

    def course(self, key: str) -> CoursePaths:
        """Every output path of the course ``key``."""
        return CoursePaths.under(self.root, key)

    def check_mounted(self) -> None:
        """Raise ``FileNotFoundError`` naming the data root and this host when it is not there (a
        worker without the shared data root mounted)."""
        if not self.root.is_dir():
            import socket

            raise FileNotFoundError(
                f"data root {self.root} does not exist on {socket.gethostname()}: mount the shared data root "
                "there (same path), or set RT_DATA_ROOT to where this worker mounts it"
            )

    def read_manifest(self, key: str):
        """The course's manifest, its drop root mapped to this machine's mount of the drop."""
        from rt_resources.ingest.manifest import read_manifest

        manifest = read_manifest(self.course_dir(key))
        drop_mount = worker_mounts()[1]
        return manifest.on_drop(Path(drop_mount)) if drop_mount else manifest

    def cohort_dir(self) -> Path:
        return self.root / "cohort"


class DicomDrop(ConfigurableResource):
    """The drop folder DICOM lands in (read only); ``$RT_DROP_ROOT``."""

    path: str = Field(default="", description="Folder the scanner or PACS export writes DICOM into")
    quiet_period_s: float = Field(
        default=DEFAULT_QUIET_PERIOD_S,
        description="Seconds without change before a course starts (a _COMPLETE file skips the wait)",
    )
    full_rescan_s: float = Field(
        default=3600.0,
        description="Seconds between full re-stats of the drop; scans in between list only folders that "
        "changed (0: every scan; RT_DROP_FULL_RESCAN_S)",
    )
    watch: bool = Field(
        default=True,
        description="quick scans ask inotify which folders changed (local file systems; RT_DROP_WATCH)",
    )

    @property
    def root(self) -> Path:
        if not self.path:
            raise ValueError("no drop folder configured: set RT_DROP_ROOT or the dicom_drop resource's path")
        return Path(worker_mounts()[1] or self.path).resolve()  # RT_WORKER_DROP_ROOT: this machine's mount

    def refresh(self, data_root: DataRoot, watch: bool | None = None):
        """Bring the drop's index up to date without loading it: a
        :class:`~rt_resources.ingest.index.Refresh` (its ``token`` changes when the drop did).
        ``watch``: use this process's inotify watch (default :attr:`watch`; a long-lived process's)."""
        from rt_resources.ingest.survey import refresh_drop

        return refresh_drop(
            self.root,
            data_root.root,
            index_dir=data_root.state(),
            full_rescan_s=self.full_rescan_s,
            hot_s=self.quiet_period_s,  # a course's folders are re-listed until it is ready
            watch=self.watch if watch is None else watch,
        )

    def links(self, data_root: DataRoot):
        """The drop's linked courses (:class:`~rt_resources.ingest.link_state.LinkStore`): bring them
        up to date with :meth:`LinkStore.update` after :meth:`refresh`, then read what changed."""
        from rt_resources.ingest.survey import link_store

        return link_store(self.root, data_root.root, index_dir=data_root.state())

    def course(self, data_root: DataRoot, key: str):
        """Course ``key`` as the drop holds it now (the index refreshed, its links brought up to
        date), read alone: a course step never loads the rest of the archive. ``KeyError`` when
        the drop no longer holds it."""
        self.refresh(data_root, watch=False)  # a step's process lives for one refresh: no watch
        store = self.links(data_root)
        store.update()
        found = [c for c in store.courses([key]) if c.files]
        if not found:
            raise KeyError(f"course {key} is not among the {len(store.keys())} courses the drop holds now")
        return found[0]

    def survey(self, data_root: DataRoot, refreshed=None) -> DropSurvey:
        """The drop's courses; ``refreshed`` (what :meth:`refresh` just returned): not refreshed again."""
        return survey_drop(
            self.root,
            data_root.root,
            index_dir=data_root.state(),
            full_rescan_s=self.full_rescan_s,
            hot_s=self.quiet_period_s,
            refreshed=refreshed,
        )


class TotalSegmentator(ConfigurableResource):
    """TotalSegmentator's settings (the CLI's --totalseg-* flags); weights in ``TOTALSEG_HOME_DIR``."""

    home: str = Field(default="", description="TOTALSEG_HOME_DIR (default ~/.totalsegmentator)")
    task: str = "total"
    fast: bool = False
    roi_subset: list[str] = Field(default_factory=list)
    device: str = Field(default="gpu", description="gpu | cpu")
    force_split: bool = False
    threads: int = Field(default=0, description="resampling/saving threads; 0 = max(2, min(8, cores // 2))")
    license_env: str = Field(default="", description="environment variable holding the licence key (its name only)")
    license_file: str = Field(default="", description="file holding the licence key")
    backend: str = Field(default="totalsegmentator", description="totalsegmentator | standin (no weights)")
    standin_seconds: float = Field(default=0.0, description="the stand-in's simulated inference time (s)")
    worker_idle_s: float = Field(default=600.0, description="an idle segmentation worker exits after (s)")
    inference_timeout_s: float = Field(default=3600.0, description="a worker silent this long is killed (s)")

    def settings(self):
        """The engine's settings; the licence key is read here, in the step, from the variable or file."""
        from rt_resources.segmentation.totalseg import TotalSegSettings, default_threads
        from rt_resources.settings import TotalSegmentatorSettings

        home = Path(self.home) if self.home else Path.home() / ".totalsegmentator"
        return TotalSegSettings(
            home=home,
            task=self.task,
            fast=self.fast,
            roi_subset=tuple(self.roi_subset),
            device=self.device,
            force_split=self.force_split,
            threads=self.threads or default_threads(),
            backend=self.backend,
            standin_seconds=self.standin_seconds,
            worker_idle_s=self.worker_idle_s,
            inference_timeout_s=self.inference_timeout_s,
            license_key=read_license_key(
                TotalSegmentatorSettings(license_env=self.license_env, license_file=self.license_file)
            ),
        )

    def output_config(self) -> dict[str, Any]:
        """What changes the masks: the backend, task, fast models, class subset."""
        config = {"task": self.task, "fast": self.fast, "roi_subset": sorted(self.roi_subset)}
        if self.backend != "totalsegmentator":  # digests of earlier totalsegmentator outputs stay equal
            config["backend"] = self.backend
        return config


class SegmentationConfig(ConfigurableResource):
    """Where custom nnU-Net models, custom-structure rules and crop regions come from."""

    models_dir: str = Field(default="", description="folder of custom nnU-Net model folders (model.yaml each)")
    custom_structures: str = Field(default="", description="YAML file of boolean structure combinations")
    crop_regions: list[str] = Field(default_factory=list, description="regions to crop to, e.g. [thorax]")
    device: str = Field(default="gpu", description="device of custom nnU-Net models: gpu | cpu")

    def output_config(self) -> dict[str, Any]:
        """What changes the outputs: the rules' content (not their path) and the crop regions."""
        from rt_resources.provenance import sha256_file

        rules = Path(self.custom_structures) if self.custom_structures else None
        return {
            "custom_structures_sha256": sha256_file(rules) if rules and rules.is_file() else "",
            "crop_regions": sorted(self.crop_regions),
        }


class ComputeConfig(ConfigurableResource):
    """CPU workers of the fan-out pools inside a step (DVH over many ROIs)."""

    workers: int = Field(default=0, description="worker processes; 0 = CPU cores - 1")

    def worker_count(self) -> int:
        from rt_resources.parallel import default_pool_workers

        return self.workers or default_pool_workers()


class RadiomicsConfig(ConfigurableResource):
    """pyradiomics settings: parameter files (shipped CT.yaml by default), which ROIs get the full
    set (``policy``, rt_resources/radiomics/policy.py), workers, sequential mode."""

    params: str = Field(default="", description="pyradiomics parameter YAML; empty = the shipped CT.yaml")
    mr_params: str = Field(default="", description="parameter YAML for MR images; empty = the shipped MR.yaml")
    pet_params: str = Field(default="", description="parameter YAML for PET SUV images; empty = the shipped PET.yaml")
    workers: int = Field(default=0, description="worker processes; 0 = CPU cores - 1")
    sequential: bool = Field(default=False, description="one ROI at a time, in process (--sequential-radiomics)")
    backend: str = Field(default="pyradiomics", description="pyradiomics | fastrad | auto (--radiomics-backend)")
    policy: str = Field(
        default="default",
        description="default: full set for full_sources, full_rois and MR ROIs, basic set for the other ROIs; "
        "full: full set for every ROI; basic: basic set for every CT ROI (BODY: light set in every policy)",
    )
    full_sources: list[str] = Field(
        default_factory=lambda: RadiomicsConfig._policy_default("DEFAULT_FULL_SOURCES"),
        description="sources whose every ROI gets the full set under the default policy",
    )
    full_rois: list[str] = Field(
        default_factory=lambda: RadiomicsConfig._policy_default("DEFAULT_FULL_ROIS"),
        description="ROI names or shell patterns (case-insensitive) that get the full set under the default policy",
    )
    basic_params: str = Field(
        default="", description="parameter YAML of the basic set; empty = the shipped CT_basic.yaml"
    )
    light_params: str = Field(
        default="", description="parameter YAML of the light set (very large ROIs); empty = the shipped CT_light.yaml"
    )

    @staticmethod
    def _policy_default(name: str) -> list[str]:
        from rt_resources.radiomics import policy

        return list(getattr(policy, name))

    def settings(self):
        from rt_resources.radiomics.engine import PARAMS_DIR, RadiomicsSettings

        params = Path(self.params) if self.params else PARAMS_DIR / "CT.yaml"
        mr_params = Path(self.mr_params) if self.mr_params else PARAMS_DIR / "MR.yaml"
        pet_params = Path(self.pet_params) if self.pet_params else PARAMS_DIR / "PET.yaml"
        basic_params = Path(self.basic_params) if self.basic_params else PARAMS_DIR / "CT_basic.yaml"
        light_params = Path(self.light_params) if self.light_params else PARAMS_DIR / "CT_light.yaml"
        return RadiomicsSettings(
            params=params,
            mr_params=mr_params,
            pet_params=pet_params,
            basic_params=basic_params,
            light_params=light_params,
            backend=self.backend,
            policy=self.policy,
            full_sources=tuple(self.full_sources),
            full_rois=tuple(self.full_rois),
        )

    def worker_count(self) -> int:
        from rt_resources.parallel import default_pool_workers

        return self.workers or default_pool_workers()

    def output_config(self) -> dict[str, Any]:
        """What changes the features: the parameter files' content (not their paths or the workers)."""
        from rt_resources.radiomics.course import params_sha256

        # the backend too: fastrad's values differ from pyradiomics' at the 1e-11 level, so the
        # table's bytes (and its data version) change with it; the policy decides each ROI's
        # parameter set (its lists only matter under the default policy)
        config = {"params_sha256": params_sha256(self.settings()), "backend": self.backend, "policy": self.policy}
        if self.policy == "default":
            config["full_sources"] = sorted(set(self.full_sources))
            config["full_rois"] = sorted({name.lower() for name in self.full_rois})
        return config


class RobustnessConfig(ConfigurableResource):
    """Radiomics robustness under perturbations (radiomics_robustness): its own resource, so that
    turning it on or changing N reruns that asset only, not the course's radiomics."""

    perturbations: int = Field(default=0, description="perturbations per ROI; 0 = off (--radiomics-robustness N)")
    threshold: float = Field(default=0.90, description="ICC at or above which a feature is robust")
    seed: int = Field(default=0, description="seed of the perturbation draws (with the course and ROI)")

    def output_config(self) -> dict[str, Any]:
        return {"perturbations": self.perturbations, "threshold": self.threshold, "seed": self.seed}


class ScienceConfig(ConfigurableResource):
    """Standard structure names (TG-263), alpha/beta for EQD2/BED, and the agreement threshold: the
    shipped tables, each extended by a site file when one is set."""

    roi_names: str = Field(default="", description="site structure-name mapping YAML (extends the shipped tables)")
    alpha_beta: str = Field(default="", description="site alpha/beta YAML (extends the shipped table)")
    agreement_min_dice: float = Field(default=0.7, description="Dice below which the agreement check flags an organ")

    def name_map(self):
        """The structure-name mapping (:class:`rt_resources.naming.tg263.NameMap`), read once per
        version of the site file (a step asks for it in its body and again for its lineage)."""
        return _name_map(self.roi_names, _file_stamp(self.roi_names))

    def alpha_beta_table(self):
        """The alpha/beta table (:class:`rt_resources.dose.eqd2.AlphaBetaTable`); a site file's
        names must be standard names of the mapping (a typo would never match a ROI)."""
        return _alpha_beta_table(
            self.alpha_beta, _file_stamp(self.alpha_beta), self.roi_names, _file_stamp(self.roi_names)
        )

    def output_config(self) -> dict[str, Any]:
        """What changes the outputs: the tables' contents (digests), not where the files are."""
        return {
            "roi_names_sha256": self.name_map().digest,
            "alpha_beta_sha256": self.alpha_beta_table().digest,
            "agreement_min_dice": self.agreement_min_dice,
        }


def _file_stamp(path: str) -> tuple[int, int]:
    """(mtime_ns, size) of a site file, (0, 0) when none is set or it is missing (loading says so)."""
    try:
        st = Path(path).stat() if path else None
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size) if st else (0, 0)


@functools.lru_cache(maxsize=8)
def _name_map(path: str, stamp: tuple[int, int]):
    from rt_resources.naming.tg263 import NameMap

    return NameMap.load(Path(path) if path else None)


@functools.lru_cache(maxsize=8)
def _alpha_beta_table(path: str, stamp: tuple[int, int], names_path: str, names_stamp: tuple[int, int]):
    from rt_resources.dose.eqd2 import AlphaBetaTable, check_site_names

    table = AlphaBetaTable.load(Path(path) if path else None)
    if path:
        check_site_names(table, Path(path), _name_map(names_path, names_stamp))
    return table


def science_config(settings: Settings) -> ScienceConfig:
    """The science resource of ``settings`` (its site tables are loaded on use)."""
    return ScienceConfig(**resource_configs(settings)["science"])


def resource_configs(settings: Settings) -> dict[str, dict[str, Any]]:
    """Resource key -> its configuration, from ``settings`` (no secret: the licence is only named)."""
    ts, rad, seg = settings.totalsegmentator, settings.radiomics, settings.segmentation
    return {
        "data_root": {
            "path": settings.data_root,
            "key_map": settings.key_map,
            "state_dir": settings.state_dir,
        },
        "dicom_drop": {
            "path": settings.drop_root,
            "quiet_period_s": float(settings.quiet_period_s),
            "full_rescan_s": float(settings.drop_full_rescan_s),
            "watch": bool(settings.drop_watch),
        },
        "totalsegmentator": {
            "home": ts.home,
            "task": ts.task,
            "fast": ts.fast,
            "roi_subset": list(ts.roi_subset),
            "device": ts.device,
            "license_env": ts.license_env,
            "license_file": ts.license_file,
            "backend": ts.backend,
            "standin_seconds": ts.standin_seconds,
            "worker_idle_s": ts.worker_idle_s,
            "inference_timeout_s": ts.inference_timeout_s,
        },
        "radiomics_config": {
            "params": rad.params,
            "mr_params": rad.mr_params,
            "pet_params": rad.pet_params,
            "workers": rad.workers or settings.cpu_workers(),
            "sequential": rad.sequential,
            "backend": rad.backend,
            "policy": rad.policy,
            "full_sources": list(rad.full_sources),
            "full_rois": list(rad.full_rois),
            "basic_params": rad.basic_params,
            "light_params": rad.light_params,
        },
        "robustness_config": {"perturbations": rad.robustness, "threshold": rad.robustness_threshold},
        "segmentation_config": {
            "models_dir": seg.models_dir,
            "custom_structures": seg.custom_structures,
            "crop_regions": list(seg.crop_regions),
            "device": ts.device,
        },
        "science": {
            "roi_names": settings.science.roi_names,
            "alpha_beta": settings.science.alpha_beta,
            "agreement_min_dice": settings.science.agreement_min_dice,
        },
        "compute": {"workers": settings.cpu_workers()},
        "gpu": {"devices": [str(d) for d in settings.gpu.devices], "per_device": settings.gpu.per_device},
    }


RESOURCE_TYPES: dict[str, type[ConfigurableResource]] = {
    "data_root": DataRoot,
    "dicom_drop": DicomDrop,
    "totalsegmentator": TotalSegmentator,
    "radiomics_config": RadiomicsConfig,
    "robustness_config": RobustnessConfig,
    "segmentation_config": SegmentationConfig,
    "compute": ComputeConfig,
    "science": ScienceConfig,
    "gpu": GpuConfig,
}


def resources_from_settings(settings: Settings) -> dict[str, ConfigurableResource]:
    """The resources of a deployment, configured from ``settings``."""
    return {key: RESOURCE_TYPES[key](**config) for key, config in resource_configs(settings).items()}


def run_config(settings: Settings) -> dict[str, Any]:
    """The ``resources`` section of a run config that gives a run exactly these settings."""
    return {"resources": {key: {"config": config} for key, config in resource_configs(settings).items()}}


def effective_config(resource: Any) -> dict[str, Any]:
    """The configuration a resource ran with (its fields; secrets are never fields)."""
    if isinstance(resource, ConfigurableResource):
        return {name: getattr(resource, name) for name in type(resource).model_fields}
    return {}


def output_config(resource: Any) -> dict[str, Any]:
    """The part of a resource's configuration that changes outputs (``{}`` when none does)."""
    method = getattr(resource, "output_config", None)
    return method() if callable(method) else {}
