"""Long-lived segmentation workers: one process per device keeps the model in memory between courses.

Why: TotalSegmentator's Python API builds nnU-Net's predictor, and loads the weights, for every
image, and resamples and writes masks while it holds the device. Here the work of a course is
split so that the GPU slot holds inference only:

* the CPU step before (``totalseg_input``) writes the model's input: the CT in the closest
  canonical orientation at the model's spacing (:func:`rt_resources.segmentation.totalseg.prepare_input`);
* the GPU step (``totalseg_inference``) leases a device and hands that file to the device's worker,
  which runs the model it already holds and writes a label map on the same grid;
* the CPU step after (``totalseg_masks``) resamples the label map onto the CT grid and writes one
  mask per class; the RTSTRUCT export (``totalseg_rtstruct``) is a step of its own.

A worker is a process started on demand by the first step that needs one, in its own session
(it outlives the step), listening on a Unix socket in the machine-local state folder
(``<state>/segworkers/<device>.sock``). It serves one request at a time, so one device never runs
two inferences at once; it keeps every model it has loaded (keyed by :class:`ModelSpec`) and exits
after ``idle_s`` without a request, or when its socket file is removed or replaced.

Faults: a worker that dies (``kill -9``, a CUDA crash) closes the connection without an answer, and
the step that used it fails with :class:`WorkerError` naming the worker's pid and log; the next
request finds the socket dead (connection refused), removes it and starts a fresh worker. A worker
that does not answer within ``timeout_s`` is killed, with the same outcome. An exception inside the
model (a corrupt input, a missing class map) is answered as an error and the worker goes on.

Every inference is appended to ``<state>/segworkers/inferences.jsonl`` (device, start and end
times, model load seconds, input name): the record the GPU duty cycle is measured from.

Protocol: one JSON line request per connection (``input``, ``output``, ``spec``), one JSON line
``{"accepted": pid}`` as soon as the worker reads it, then one JSON line result.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

WORKER_FOLDER = "segworkers"  #: under the machine-local state folder
INFERENCE_LOG = "inferences.jsonl"
DEFAULT_IDLE_S = 600.0  #: a worker with nothing to do for this long exits (its models leave memory)
DEFAULT_TIMEOUT_S = 3600.0  #: one inference; past it the worker is taken as hung and killed
START_TIMEOUT_S = 120.0  #: from spawning a worker to its socket answering


class WorkerError(RuntimeError):
    """A segmentation worker died, hung or answered with an error; the message says which and where to look."""


@dataclass(frozen=True)
class ModelSpec:
    """What a worker loads: the backend (``totalsegmentator`` runs nnU-Net's predictor on the
    official weights; ``standin`` is the stand-in of :mod:`rt_resources.segmentation.standin`
    for installations without weights) and the settings that choose the model."""

    backend: str = "totalsegmentator"
    home: str = ""
    task: str = "total"
    fast: bool = False
    standin_seconds: float = 0.0  #: the stand-in's simulated inference time

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Inference:
    """One answered request."""

    output: Path
    inference_s: float  #: the model's run, load excluded
    load_s: float  #: loading the model for this request (0.0 when the worker already held it)
    started_at: float  #: epoch seconds, the model's start
    ended_at: float
    worker_pid: int
    device: str
    notes: list[str] = field(default_factory=list)


def worker_dir(state_dir: Path | str) -> Path:
    return Path(state_dir) / WORKER_FOLDER


def socket_path(state_dir: Path | str, device: str) -> Path:
    """The worker's socket (its ``.pid``, ``.lock`` and ``.log`` beside it). A Unix socket path is
    limited to about 100 bytes: a deeper state folder gets a short folder under the temporary
    directory, named by a digest of the state folder."""
    safe = "".join(c if c.isalnum() else "-" for c in device)
    path = worker_dir(state_dir) / f"{safe}.sock"
    if len(str(path)) > 100:
        import tempfile

        digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:16]
        path = Path(tempfile.gettempdir()) / f"rtseg-{digest}" / f"{safe}.sock"
    return path


def inference_log(state_dir: Path | str) -> Path:
    return worker_dir(state_dir) / INFERENCE_LOG


def read_inference_log(state_dir: Path | str) -> list[dict[str, Any]]:
    path = inference_log(state_dir)
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------- client


def infer(
    state_dir: Path | str,
    device: str,
    spec: ModelSpec,
    input_path: Path,
    output_path: Path,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    idle_s: float = DEFAULT_IDLE_S,
    on_log=None,
) -> Inference:
    """Run ``spec``'s model on ``input_path`` in the worker of ``device`` (started when none
    answers) and return when ``output_path`` (a label map on the input's grid) is written."""
    sock_path = socket_path(state_dir, device)
    request = {"input": str(input_path), "output": str(output_path), "spec": asdict(spec)}
    log_file = sock_path.with_suffix(".log")
    for attempt in (1, 2):  # a worker that dies before it accepts the request is replaced once
        conn, pid, started = _connect_or_start(sock_path, device, idle_s, inference_log(state_dir))
        if started and on_log:
            on_log(f"started segmentation worker pid {pid} for device {device}")
        try:
            conn.settimeout(30.0)
            conn.sendall((json.dumps(request) + "\n").encode())
            reader = conn.makefile("r", encoding="utf-8")
            try:
                accepted = _read_line(reader, pid, device, log_file, "accepting the request")
            except (WorkerError, TimeoutError):
                if attempt == 2:
                    raise
                _kill(pid, sock_path)
                continue
            pid = int(accepted.get("accepted", pid))
            conn.settimeout(timeout_s)
            try:
                answer = _read_line(reader, pid, device, log_file, f"the inference of {Path(input_path).name}")
            except TimeoutError:
                _kill(pid, sock_path)
                raise WorkerError(
                    f"segmentation worker pid {pid} on device {device} did not answer within {timeout_s:.0f} s "
                    f"(hung?): killed; the next request starts a fresh worker (log: {log_file})"
                ) from None
            except WorkerError:
                _kill(pid, sock_path)  # dying: make sure it is gone before the next request connects
                raise
            break
        finally:
            conn.close()
    if not answer.get("ok"):
        raise WorkerError(f"segmentation worker pid {pid} on device {device}: {answer.get('error', 'failed')}")
    return Inference(
        output=Path(answer["output"]),
        inference_s=float(answer["inference_s"]),
        load_s=float(answer["load_s"]),
        started_at=float(answer["started_at"]),
        ended_at=float(answer["ended_at"]),
        worker_pid=pid,
        device=device,
        notes=list(answer.get("notes", [])),
    )


def _read_line(reader, pid: int, device: str, log_file: Path, during: str) -> dict[str, Any]:
    try:
        line = reader.readline()
    except ConnectionError:
        line = ""
    if not line:
        raise WorkerError(
            f"segmentation worker pid {pid} on device {device} closed the connection during {during} "
            f"(killed or crashed); the next request starts a fresh worker (log: {log_file})"
        )
    return json.loads(line)


def _try_connect(sock_path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(sock_path))
        return conn
    except (FileNotFoundError, ConnectionRefusedError):
        conn.close()
        return None


def _pid_of(sock_path: Path) -> int:
    with contextlib.suppress(OSError, ValueError):
        return int(sock_path.with_suffix(".pid").read_text().strip())
    return 0


def _connect_or_start(sock_path: Path, device: str, idle_s: float, log_path: Path) -> tuple[socket.socket, int, bool]:
    """A connection to the device's worker, starting one (under a lock: one per device) when none answers."""
    sock_path.parent.mkdir(parents=True, exist_ok=True)
    conn = _try_connect(sock_path)
    if conn is not None:
        return conn, _pid_of(sock_path), False
    with open(sock_path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _try_connect(sock_path)  # another step may have started it meanwhile
        if conn is not None:
            return conn, _pid_of(sock_path), False
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()  # a dead worker's socket
        log_file = sock_path.with_suffix(".log")
        with open(log_file, "ab") as log:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", __name__, "--socket", str(sock_path), "--device", device),
                    *("--idle-s", str(idle_s), "--inference-log", str(log_path)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives the step; a signal to the step's group does not reach it
                close_fds=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            conn = _try_connect(sock_path)
            if conn is not None:
                return conn, proc.pid, True
            if proc.poll() is not None:
                tail = log_file.read_text(errors="replace")[-2000:]
                raise WorkerError(
                    f"segmentation worker for device {device} exited with {proc.returncode} at start: {tail}"
                )
            time.sleep(0.05)
        _kill(proc.pid)
        raise WorkerError(
            f"segmentation worker for device {device} did not listen within {START_TIMEOUT_S:.0f} s (log: {log_file})"
        )


def _kill(pid: int, sock_path: Path | None = None) -> None:
    """SIGKILL ``pid`` and wait (up to 10 s) until it is gone; then remove its socket, so the next
    request does not connect to a listening socket whose process is dying."""
    if pid <= 0:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.02)
    if sock_path is not None and _pid_of(sock_path) == pid:
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed and not yet reaped by its parent, does not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def stop_worker(state_dir: Path | str, device: str) -> bool:
    """Kill the worker of ``device`` (tests, ``rtpipeline`` shutdown); True when one was running."""
    sock_path = socket_path(state_dir, device)
    pid = _pid_of(sock_path)
    alive = _try_connect(sock_path)
    if alive is not None:
        alive.close()
    _kill(pid, sock_path)
    return alive is not None


# ---------------------------------------------------------------------------------------- server


class _Server:
    def __init__(self, sock_path: Path, device: str, idle_s: float, log_path: Path) -> None:
        self.sock_path, self.device, self.idle_s, self.log_path = sock_path, device, idle_s, log_path
        self.models: dict[str, Any] = {}

    def model(self, spec: ModelSpec) -> tuple[Any, float]:
        key = spec.key()
        if key in self.models:
            return self.models[key], 0.0
        from rt_resources.segmentation.backends import load_model

        start = time.perf_counter()
        self.models[key] = load_model(spec, self.device)
        return self.models[key], time.perf_counter() - start

    def handle(self, conn: socket.socket) -> None:
        reader = conn.makefile("r", encoding="utf-8")
        line = reader.readline()
        if not line:
            return
        conn.sendall((json.dumps({"accepted": os.getpid()}) + "\n").encode())
        request = json.loads(line)
        try:
            spec = ModelSpec(**request["spec"])
            model, load_s = self.model(spec)
            started = time.time()
            notes = model.predict(Path(request["input"]), Path(request["output"])) or []
            ended = time.time()
            answer = {
                "ok": True,
                "output": request["output"],
                "inference_s": ended - started,
                "load_s": load_s,
                "started_at": started,
                "ended_at": ended,
                "notes": notes,
            }
            record = {
                "device": self.device,
                "pid": os.getpid(),
                "input": Path(request["input"]).parent.parent.name,  # the course folder (a pseudonym)
                "backend": spec.backend,
                "started_at": started,
                "ended_at": ended,
                "inference_s": ended - started,
                "load_s": load_s,
            }
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.log_path, "a") as log:
                log.write(json.dumps(record) + "\n")
        except Exception as exc:  # the request fails, the worker and its models stay
            import traceback

            traceback.print_exc()
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        with contextlib.suppress(OSError):
            conn.sendall((json.dumps(answer) + "\n").encode())

    def serve(self) -> None:
        self.sock_path.parent.mkdir(parents=True, exist_ok=True)
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(str(self.sock_path))
        inode = self.sock_path.stat().st_ino
        self.sock_path.with_suffix(".pid").write_text(str(os.getpid()))
        server.listen(16)
        server.settimeout(1.0)
        print(f"segmentation worker pid {os.getpid()} on device {self.device} listening", flush=True)
        last = time.monotonic()
        while True:
            try:
                conn, _ = server.accept()
            except TimeoutError:
                try:
                    replaced = self.sock_path.stat().st_ino != inode
                except FileNotFoundError:
                    replaced = True
                if replaced or time.monotonic() - last > self.idle_s:
                    break
                continue
            with conn:
                conn.settimeout(None)
                self.handle(conn)
            last = time.monotonic()
        with contextlib.suppress(FileNotFoundError):
            if self.sock_path.stat().st_ino == inode:
                self.sock_path.unlink()
        print(f"segmentation worker pid {os.getpid()} exits (idle or replaced)", flush=True)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description="A long-lived segmentation worker (started by the GPU steps).")
    parser.add_argument("--socket", required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--idle-s", type=float, default=DEFAULT_IDLE_S)
    parser.add_argument("--inference-log", required=True)
    args = parser.parse_args(argv)
    _Server(Path(args.socket), args.device, args.idle_s, Path(args.inference_log)).serve()


if __name__ == "__main__":
    main()
