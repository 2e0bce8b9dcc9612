"""Machine-local state: the drop index, the sensor's request ledger and the lock files.

These are SQLite databases (in WAL mode) and ``flock`` locks: they need a local file system.
The data root may sit on a network file system shared by every worker (courses/, cohort/ and
logs/ are plain files written by rename, safe there), so the state has its own folder:

1. the ``state_dir`` setting (``RT_STATE_DIR``) when given;
2. else ``<data_root>/index`` when the data root is on a local file system (one machine: the
   layout of earlier versions);
3. else, for a data root on NFS, SMB, CephFS, ... (see :data:`NETWORK_FS_TYPES`), a folder of this
   machine, ``~/.local/state/rtpipeline/<digest of the data root>``.

The index is a cache of the drop (every row can be rebuilt by reading the files again), so a
second machine with its own state folder only pays a first, cold scan. The request ledger is
written only by the sensors and ``rtpipeline run``, which run beside the daemon.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

#: file systems the state must not live on (``/proc/mounts`` types)
NETWORK_FS_TYPES = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "ceph", "glusterfs", "lustre", "gpfs", "beegfs", "fuse.sshfs", "9p"}
)


def mount_fs_type(path: Path, mounts_file: Path = Path("/proc/mounts")) -> str:
    """The type of the file system ``path`` lies on (the longest mount point above it); "" if unknown."""
    path = Path(path).resolve()
    best, kind = -1, ""
    try:
        lines = mounts_file.read_text().splitlines()
    except OSError:
        return ""
    for line in lines:
        parts = line.split()
        if len(parts) < 3:
            continue
        point = Path(parts[1].replace("\\040", " "))
        if (path == point or point in path.parents) and len(point.parts) > best:
            best, kind = len(point.parts), parts[2]
    return kind


def on_network_fs(path: Path, mounts_file: Path = Path("/proc/mounts")) -> bool:
    return mount_fs_type(path, mounts_file) in NETWORK_FS_TYPES


def local_state_default(data_root: Path) -> Path:
    """This machine's state folder for a data root on a network file system."""
    digest = hashlib.sha256(str(Path(data_root).resolve()).encode()).hexdigest()[:12]
    return Path.home() / ".local" / "state" / "rtpipeline" / digest


def state_dir(data_root: Path, configured: str | Path = "", mounts_file: Path = Path("/proc/mounts")) -> Path:
    """Where the drop index, the request ledger and the locks of ``data_root`` live on this machine."""
    if configured:
        return Path(configured).expanduser().resolve()
    root = Path(data_root).resolve()
    if on_network_fs(root, mounts_file):
        return local_state_default(root)
    return root / "index"


@functools.lru_cache(maxsize=1)
def worker_mounts() -> tuple[str, str]:
    """``(data root, drop)`` as this machine mounts them, when its settings say so
    (``RT_WORKER_DATA_ROOT``, ``RT_WORKER_DROP_ROOT``: a worker whose mounts differ from the paths
    the runs were given); ``("", "")`` otherwise. Read once per process, where the step runs: run
    config from another machine never overrides them."""
    from rt_resources.settings import load_settings

    settings = load_settings()
    return settings.worker_data_root, settings.worker_drop_root


def ledger_path(state: Path) -> Path:
    """The sensor's request ledger in a state folder."""
    return Path(state) / "sensor_requests.sqlite"
