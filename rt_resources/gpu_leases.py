"""Leases of this machine's GPUs: each GPU step holds one device (slot) for its duration.

A machine has *slots*: its devices times ``per_device`` (segmentations at once on one device,
``gpu.per_device`` / ``RT_SEGMENTATIONS_PER_GPU``). The Dagster pool ``gpu`` has as many slots
(:func:`rt_assets.gpu_pool.ensure_gpu_pool`), so Dagster never starts more GPU steps than there
are slots; inside the step a :class:`DeviceLease` says *which* device it runs on, so that two
steps never share a device beyond ``per_device``.

A slot is a lock file ``<state folder>/gpu/<device>-<k>.lock`` held with ``flock``. The state
folder is machine-local (:mod:`rt_resources.state`), and a ``flock`` dies with the open file, so a
step killed with ``kill -9`` frees its device at once (a forked child closes its copies of the
lease's file at once, so a child that outlives the step does not keep the device leased). A
lease takes a free slot of the least-loaded device (a device nobody uses before a second slot on a
busy one) and, when every slot is taken, polls until one is
freed or ``timeout_s`` has passed (:class:`LeaseTimeout` names the lock folder).

Device ids are CUDA's names of the devices (nvidia-smi's indices, or the entries of
``CUDA_VISIBLE_DEVICES``). The index torch uses in this process is :attr:`GpuSlots.ordinal`: the
position in ``CUDA_VISIBLE_DEVICES`` when that is set, so a process pinned to one device (a Celery
GPU worker) leases that device, which is index 0 (``cuda:0``) for its engines.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from dagster import ConfigurableResource
from pydantic import Field

LOCK_FOLDER = "gpu"  #: under the state folder
CUDA_VISIBLE = "CUDA_VISIBLE_DEVICES"
DEFAULT_TIMEOUT_S = 6 * 3600.0  #: a slot is normally free at once: the pool `gpu` has as many slots
POLL_S = 0.25


class GpuConfigError(ValueError):
    """Configured devices that this process cannot address."""


class LeaseTimeout(TimeoutError):
    """No GPU slot was freed within the lease's timeout."""


class _GpuSettingsLike(Protocol):
    devices: Sequence[Any]
    per_device: int


def visible_devices(environ: Mapping[str, str] | None = None) -> list[str] | None:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (None when it is not set)."""
    value = (os.environ if environ is None else environ).get(CUDA_VISIBLE)
    if value is None:
        return None
    return [d.strip() for d in value.split(",") if d.strip()]


def detect_cuda_devices() -> int:
    """CUDA devices torch sees in this process (0 without CUDA or without torch)."""
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


@dataclass(frozen=True)
class GpuSlots:
    """The devices a lease chooses from, ``per_device`` slots each."""

    devices: tuple[str, ...]
    per_device: int = 1
    visible: tuple[str, ...] | None = None  #: CUDA_VISIBLE_DEVICES of this process, when set

    @property
    def count(self) -> int:
        """The slot count: the limit of the Dagster pool ``gpu``."""
        return len(self.devices) * self.per_device

    def ordinal(self, device: str) -> int:
        """The CUDA index of ``device`` in this process (``cuda:<ordinal>``)."""
        if self.visible:
            if device in self.visible:
                return self.visible.index(device)
            raise GpuConfigError(f"GPU device {device!r} is not in {CUDA_VISIBLE}={','.join(self.visible)}")
        if device.isdigit():
            return int(device)
        raise GpuConfigError(f"GPU device {device!r} is not a CUDA index (and {CUDA_VISIBLE} is not set)")

    def lock_file(self, lock_dir: Path, device: str, slot: int) -> Path:
        return Path(lock_dir) / f"{re.sub(r'[^A-Za-z0-9._-]', '_', device)}-{slot}.lock"


def gpu_slots(
    settings: _GpuSettingsLike, detected: int | None = None, environ: Mapping[str, str] | None = None
) -> GpuSlots:
    """The devices and slot count of ``settings`` (``gpu.devices``, ``gpu.per_device``).

    ``detected``: the CUDA devices seen (default: :func:`detect_cuda_devices`). Devices are, first
    match wins: the one device of a process pinned by ``CUDA_VISIBLE_DEVICES`` (a Celery GPU
    worker); the configured ones (each must be visible when ``CUDA_VISIBLE_DEVICES`` is set); those
    of ``CUDA_VISIBLE_DEVICES``; ``0 .. detected-1``; else one device ``"0"`` (no CUDA: steps on the
    CPU still take turns on it)."""
    visible = visible_devices(environ)
    names = (re.sub(r"^(cuda|gpu):", "", str(d).strip()) for d in settings.devices)  # "cuda:1" is "1"
    configured = list(dict.fromkeys(d for d in names if d))
    if visible is not None and len(visible) == 1:
        devices = visible
    elif configured:
        devices = configured
        missing = [d for d in configured if visible and d not in visible]
        if missing:
            raise GpuConfigError(
                f"gpu.devices {configured} (RT_GPU_DEVICES) name {missing}, which {CUDA_VISIBLE}="
                f"{','.join(visible or [])} hides from this process"
            )
    elif visible:
        devices = visible
    else:
        n = detect_cuda_devices() if detected is None else detected
        devices = [str(i) for i in range(n)] or ["0"]
    return GpuSlots(tuple(devices), max(1, int(settings.per_device)), tuple(visible) if visible else None)


#: fds of the leases this process holds; a forked child closes its copies at once (below)
_HELD: set[int] = set()


def _close_inherited() -> None:
    """In a forked child: drop the copies of this process's lease fds. A flock belongs to the open
    file, so a library's forked worker (or a stuck one left behind) would otherwise keep the lease
    after the step ends or is killed; closing a copy, without LOCK_UN, leaves the parent's lock."""
    for fd in list(_HELD):
        with contextlib.suppress(OSError):
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited)


def _try_lock(path: Path) -> int | None:
    """An fd holding an exclusive flock on ``path``, or None when someone holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return None
        raise
    return fd


def _unlock(fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class DeviceLease:
    """``with DeviceLease(slots, lock_dir) as lease:`` holds one slot; ``lease.device`` is its
    device id, ``lease.ordinal`` the CUDA index of it here, ``lease.slot`` the slot on it."""

    def __init__(
        self,
        slots: GpuSlots,
        lock_dir: Path | str,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        poll_s: float = POLL_S,
        on_wait: Callable[[str], Any] | None = None,
    ) -> None:
        self.slots = slots
        self.lock_dir = Path(lock_dir)
        self.timeout_s = float(timeout_s)
        self.poll_s = float(poll_s)
        self.on_wait = on_wait
        self.device: str | None = None
        self.slot: int | None = None
        self.acquired_at: float | None = None  #: epoch seconds
        self.released_at: float | None = None
        self.waited_s = 0.0
        self._fd: int | None = None

    @classmethod
    def in_state_dir(cls, slots: GpuSlots, state_dir: Path | str, **kwargs: Any) -> DeviceLease:
        """A lease on the lock files of the machine-local state folder (``<state>/gpu``)."""
        return cls(slots, Path(state_dir) / LOCK_FOLDER, **kwargs)

    @property
    def ordinal(self) -> int:
        if self.device is None:
            raise RuntimeError("the lease holds no device")
        return self.slots.ordinal(self.device)

    def engine_device(self, kind: str) -> str:
        """The torch device of an engine configured with ``kind`` (gpu | cpu): ``cuda:<ordinal>`` or cpu."""
        return f"cuda:{self.ordinal}" if kind == "gpu" else "cpu"

    def describe(self, kind: str) -> str:
        """For logs: ``cuda:1``, or ``cpu (slot 0 of device 0)`` when the engine runs on the CPU."""
        return self.engine_device(kind) if kind == "gpu" else f"cpu (slot {self.slot} of device {self.device})"

    def record(self) -> dict[str, Any]:
        """JSON-ready: device, slot, slots, and the interval the lease was held (epoch seconds)."""
        return {
            "device": self.device,
            "slot": self.slot,
            "devices": list(self.slots.devices),
            "per_device": self.slots.per_device,
            "acquired": self.acquired_at,
            "released": self.released_at,
            "waited_s": round(self.waited_s, 3),
        }

    def try_acquire(self) -> bool:
        """Take a free slot now, on the least-loaded device; False when every slot is held."""
        self.lock_dir.mkdir(parents=True, exist_ok=True)
        busy = dict.fromkeys(self.slots.devices, 0)
        held: dict[tuple[str, int], int] = {}
        try:
            for device in self.slots.devices:
                for k in range(self.slots.per_device):
                    fd = _try_lock(self.slots.lock_file(self.lock_dir, device, k))
                    if fd is None:
                        busy[device] += 1
                    else:
                        held[(device, k)] = fd
            if not held:
                return False
            order = {d: i for i, d in enumerate(self.slots.devices)}
            best = min(held, key=lambda ds: (busy[ds[0]], order[ds[0]], ds[1]))
            fd = held.pop(best)
        finally:
            for other in held.values():
                _unlock(other)
        _HELD.add(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()} since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n".encode())
        self._fd, (self.device, self.slot) = fd, best
        self.acquired_at, self.released_at = time.time(), None
        return True

    def acquire(self) -> DeviceLease:
        if self._fd is not None:
            raise RuntimeError("lease already held")
        start = time.monotonic()
        told = False
        while not self.try_acquire():
            waited = time.monotonic() - start
            if waited >= self.timeout_s:
                raise LeaseTimeout(
                    f"no GPU slot freed in {self.timeout_s:.0f} s: all {self.slots.count} slot(s) of device(s) "
                    f"{', '.join(self.slots.devices)} ({self.slots.per_device} each) are held; the lock files are "
                    f"in {self.lock_dir} (`fuser -v {self.lock_dir}/*.lock` shows who holds them). Is the Dagster "
                    f"pool `gpu` larger than the slot count, or is another pipeline using this state folder?"
                )
            if not told and self.on_wait is not None:
                self.on_wait(
                    f"all {self.slots.count} GPU slot(s) are held; waiting for one (lock files in {self.lock_dir})"
                )
                told = True
            time.sleep(max(0.0, min(self.poll_s, self.timeout_s - waited)))
        self.waited_s = time.monotonic() - start
        return self

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(fd)
            _unlock(fd)
            self.released_at = time.time()

    def __enter__(self) -> DeviceLease:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    @contextlib.contextmanager
    def pinned(self) -> Iterator[None]:
        """Run the block on the leased device when torch sees CUDA here: torch's current device is
        set to it, and processes spawned inside see only it (``CUDA_VISIBLE_DEVICES``), as ``cuda:0``.
        For engines that ask for plain ``cuda`` (fastrad's radiomics and its worker pool)."""
        if self.device is None or not detect_cuda_devices():
            yield
            return
        import torch

        previous_device = torch.cuda.current_device()
        torch.cuda.set_device(self.ordinal)  # before CUDA_VISIBLE_DEVICES changes: CUDA reads it once
        previous = os.environ.get(CUDA_VISIBLE)
        os.environ[CUDA_VISIBLE] = self.device
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(CUDA_VISIBLE, None)
            else:
                os.environ[CUDA_VISIBLE] = previous
            torch.cuda.set_device(previous_device)


class GpuConfig(ConfigurableResource):
    """The GPUs of this machine that GPU steps lease, one device per step (``gpu.devices``,
    ``gpu.per_device``). Not part of the settings digest: the device does not change the masks."""

    devices: list[str] = Field(
        default_factory=list, description="CUDA devices to lease, e.g. [0, 1]; empty: every device seen, else one"
    )
    per_device: int = Field(default=1, description="GPU steps at once on one device")
    lease_timeout_s: float = Field(
        default=DEFAULT_TIMEOUT_S, description="seconds a step waits for a free device before it fails"
    )

    def slots(self, detected: int | None = None) -> GpuSlots:
        return gpu_slots(self, detected)

    def lease(self, state_dir: Path | str, on_wait: Callable[[str], Any] | None = None) -> DeviceLease:
        """A lease (not yet held) on a slot of this machine, lock files in ``<state_dir>/gpu``."""
        return DeviceLease.in_state_dir(self.slots(), state_dir, timeout_s=self.lease_timeout_s, on_wait=on_wait)
