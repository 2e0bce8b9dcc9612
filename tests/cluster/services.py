"""Local PostgreSQL, Redis and Celery workers for the cluster test and benchmarks/cluster.py.

Each service is started as a child process group of ours, on a loopback port (or a socket folder
under the work folder), and stopped (SIGKILL of its process group, or ``pg_ctl stop``) when its
context ends: nothing is left running, and nothing already running on the machine is used.
PostgreSQL refuses to run as root, so as root its processes run as the ``postgres`` user that
Debian's package creates (``make services`` installs ``postgresql`` and ``redis-server``).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path


def _pg_bin() -> Path:
    """The newest PostgreSQL server of Debian's packages (15 on bookworm, 17 on trixie)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


PG_BIN = _pg_bin()
CELERY = Path(sys.executable).parent / "celery"


class ServiceError(RuntimeError):
    """A service could not be started (the message says which and where its log is)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise ServiceError(f"{what} did not listen on 127.0.0.1:{port} within {timeout:.0f} s; see {log}")


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


def _stop_group(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)


@contextmanager
def postgres(workdir: Path) -> Iterator[str]:
    """A fresh PostgreSQL 15 cluster on a loopback port; yields the URL of its database ``dagster``."""
    if not (PG_BIN / "initdb").exists():
        raise ServiceError(f"PostgreSQL is not installed ({PG_BIN}/initdb missing): run `make services`")
    # as root the server runs as user postgres, which cannot enter pytest's private tmp folders:
    # its cluster, socket and log go to a folder of its own, removed at the end
    base = Path(tempfile.mkdtemp(prefix="rt-pg-")) if os.geteuid() == 0 else Path(workdir)
    data = base / "pg"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
        shutil.chown(data, "postgres", "postgres")
    log = base / "postgres.log"
    port = free_port()
    init = subprocess.run(
        _as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "rt", "-A", "trust", "--no-sync"]),
        capture_output=True,
        text=True,
    )
    if init.returncode:
        raise ServiceError(f"initdb failed: {init.stderr.strip()}")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    ctl = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options]
    start = subprocess.run(_as_postgres([*ctl, "-w", "start"]), capture_output=True, text=True)
    if start.returncode:
        raise ServiceError(f"PostgreSQL did not start: {start.stderr.strip()}; see {log}")
    try:
        made = subprocess.run(
            [str(PG_BIN / "psql") if (PG_BIN / "psql").exists() else "psql", "-h", "127.0.0.1", "-p", str(port)]
            + ["-U", "rt", "-d", "postgres", "-c", "CREATE DATABASE dagster"],
            capture_output=True,
            text=True,
        )
        if made.returncode:
            raise ServiceError(f"CREATE DATABASE failed: {made.stderr.strip()}")
        yield f"postgresql+psycopg2://rt@127.0.0.1:{port}/dagster"
    finally:
        subprocess.run(_as_postgres([*ctl, "-m", "immediate", "stop"]), capture_output=True)
        if base != Path(workdir):
            shutil.copy(log, Path(workdir) / "postgres.log")
            shutil.rmtree(base, ignore_errors=True)


@contextmanager
def redis(workdir: Path) -> Iterator[str]:
    """A Redis server on a loopback port, no persistence; yields its URL (database 0)."""
    exe = shutil.which("redis-server")
    if not exe:
        raise ServiceError("redis-server is not installed: run `make services`")
    port = free_port()
    log = Path(workdir) / "redis.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_port(port, "Redis", log)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        _stop_group(proc)


def start_worker(
    name: str, queue: str, env: Mapping[str, str], log: Path, cwd: Path, concurrency: int = 1
) -> subprocess.Popen:
    """One Celery worker of this project (:mod:`rt_assets.celery_app`) serving ``queue``."""
    cmd = [str(CELERY), "-A", "rt_assets.celery_app", "worker", "-Q", queue, "--concurrency", str(concurrency)]
    cmd += [
        "--hostname",
        f"{name}@%h",
        "--loglevel",
        "INFO",
        "--without-gossip",
        "--without-mingle",
        "--pool",
        "threads",
    ]
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, cwd=cwd, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def wait_worker_ready(log: Path, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise ServiceError(f"Celery worker exited ({proc.returncode}); see {log}")
        if " ready." in log.read_text(errors="replace"):
            return
        time.sleep(0.5)
    raise ServiceError(f"Celery worker not ready within {timeout:.0f} s; see {log}")


@contextmanager
def workers(specs: list[tuple[str, str, Mapping[str, str]]], workdir: Path, cwd: Path) -> Iterator[dict]:
    """Start Celery workers ``(name, queue, env)``; yields name -> process; kills them at the end."""
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name, queue, env in specs:
            log = Path(workdir) / f"worker-{name}.log"
            procs[name] = start_worker(name, queue, env, log, cwd)
        for name, proc in procs.items():
            wait_worker_ready(Path(workdir) / f"worker-{name}.log", proc)
        yield procs
    finally:
        for proc in procs.values():
            _stop_group(proc)
