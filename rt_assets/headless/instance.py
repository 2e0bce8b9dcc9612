"""The Dagster instance a CLI run uses, and the lock that keeps two CLI runs off one data root.

The instance lives in ``$DAGSTER_HOME`` when set, else in ``<outdir>/.dagster`` (created with the
project's dagster.yaml). It is opened from its folder (``DagsterInstance.from_config``): the CLI
never writes ``DAGSTER_HOME`` into its own environment; the daemon it may start is given the
folder explicitly.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

PROJECT_DAGSTER_YAML = Path(__file__).resolve().parents[2] / "dagster.yaml"
LOCK_FILE = ".rtpipeline.lock"


class HomeError(RuntimeError):
    """The Dagster home cannot be used (not writable, not a folder)."""


class DataRootBusy(RuntimeError):
    """Another ``rtpipeline run`` is processing the same data root."""


def resolve_home(outdir: Path, environ: Mapping[str, str] | None = None) -> Path:
    """``$DAGSTER_HOME`` if set, else ``<outdir>/.dagster``."""
    environ = os.environ if environ is None else environ
    return Path(environ["DAGSTER_HOME"]).resolve() if environ.get("DAGSTER_HOME") else (Path(outdir) / ".dagster")


def prepare_home(home: Path) -> Path:
    """Create ``home`` with the project's dagster.yaml if it has none; check it can be written."""
    home = Path(home).resolve()
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe = home / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise HomeError(
            f"Dagster home {home} cannot be written ({exc.strerror or exc}): the run history and the run "
            "queue live there. Point DAGSTER_HOME at a writable folder, or unset it to use <outdir>/.dagster."
        ) from exc
    config = home / "dagster.yaml"
    if not config.exists():  # whole or not at all: another process may open the instance at once
        tmp = config.with_name(f".dagster.yaml.{uuid.uuid4().hex[:8]}.tmp")
        tmp.write_text(PROJECT_DAGSTER_YAML.read_text())
        os.replace(tmp, config)
    return home


INIT_LOCK = ".rtpipeline-init.lock"


def open_instance(home: Path):
    """The Dagster instance of ``home`` (its dagster.yaml), without touching the environment.

    Opening a new SQLite instance creates its storages and stamps their schema versions; two
    processes doing that at once (the CLI, and a UI or a script opening the same folder) can stamp a
    version twice ("alembic_version has more than one head"), which breaks the instance for good.
    So the opening is serialized by a lock file in the home (held only while the storages open)."""
    from dagster import DagsterInstance

    home = Path(home)
    try:
        lock = open(home / INIT_LOCK, "a")
    except OSError:  # a home this user may only read: nothing to create there, nothing to serialize
        return DagsterInstance.from_config(str(home))
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return DagsterInstance.from_config(str(home))


class DataRootLock:
    """An exclusive lock on ``<state folder>/.rtpipeline.lock`` for the life of one CLI run (the state
    folder is machine-local: :mod:`rt_resources.state`; across machines sharing a data root, the run
    queue's one-run-per-course limit keeps two runs off one course).

    A second ``rtpipeline run`` on the same data root refuses at once, naming the holder; the lock
    dies with its process (``kill -9`` included), so a crashed run never blocks the next one.
    ``session`` identifies this CLI run in the tags of the runs it submits."""

    def __init__(self, data_root: Path, state: Path | None = None) -> None:
        self.data_root = Path(data_root)
        from rt_resources.state import state_dir

        self.path = Path(state if state is not None else state_dir(self.data_root)) / LOCK_FILE
        self.session = uuid.uuid4().hex[:12]
        self._fd: int | None = None

    def acquire(self) -> DataRootLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DataRootBusy(
                f"another rtpipeline run is processing {self.data_root} "
                f"(pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('started', '?')}): "
                "wait for it to finish, or give this one another --outdir. Two runs never write one course."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            json.dumps(
                {
                    "pid": os.getpid(),
                    "host": socket.gethostname(),
                    "session": self.session,
                    "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                }
            ).encode(),
            0,
        )
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DataRootLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}
