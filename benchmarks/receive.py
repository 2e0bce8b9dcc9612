"""Benchmark: DICOM received over the network (C-STORE) against the same files copied into the drop.

One synthetic drop of about 3,000 files (``rt_resources.synthetic``: 20 patients, each a CT series
of 147 slices plus RTSTRUCT, RTPLAN and RTDOSE) is delivered to an empty drop folder three ways,
in one run, from a warm page cache:

* ``shutil.copytree`` into the drop: what copying an export folder costs (the baseline);
* the same copy with every file ``fsync``'d: the durability the receiver gives each instance;
* C-STORE over loopback to ``rtpipeline receive`` (the real command, its own process): one
  association per patient, one after another, as a planning system sends a course. The sender is
  pynetdicom's SCU sending each file's bytes as stored and with TCP_NODELAY, as DCMTK's storescu and
  PACS do. The clock stops when the last association's folder is in the drop with its
  ``_COMPLETE`` marker (staged, fsync'd, renamed).

Throughput is files/s (and MB/s); the closing note gives C-STORE's ratio to the copy.

    .venv/bin/python benchmarks/receive.py [--patients 20] [--slices 147] [--rows 512] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pydicom
import pynetdicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, evt

from rt_resources.ingest.index import COMPLETE_MARKER
from rt_resources.receive.scp import READ_SOP_CLASSES
from rt_resources.synthetic import SynthOptions, write_patient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_fsync(src: Path, dest: Path) -> None:
    """copytree, then each file flushed to disk as the receiver flushes each instance."""
    shutil.copytree(src, dest)
    for path in dest.rglob("*"):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _no_delay(event: evt.Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def send_courses(port: int, courses: list[list[Path]]) -> None:
    """One association per course, sent one after another; every status must be Success."""
    _config.STORE_SEND_CHUNKED_DATASET = True  # the file's bytes as stored, no decode/re-encode
    ae = AE(ae_title="TPS")
    ae.maximum_pdu_size = 0  # the receiver's maximum decides
    for uid in READ_SOP_CLASSES:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
        ae.add_requested_context(uid, ImplicitVRLittleEndian)
    for files in courses:
        assoc = ae.associate("127.0.0.1", port, ae_title="RTPIPELINE", evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)])
        if not assoc.is_established:
            raise RuntimeError("the receiver did not accept the association")
        for path in files:
            status = assoc.send_c_store(path)
            if int(status.Status) != 0:
                raise RuntimeError(f"C-STORE of {path} failed: status 0x{int(status.Status):04X}")
        assoc.release()


class Receiver:
    """``rtpipeline receive`` in its own process, as deployed."""

    def __init__(self, drop: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RT_RECEIVE") and k != "RT_SETTINGS"}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "rt_assets.cli",
                "receive",
                "--drop",
                str(drop),
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        if not self.ready.wait(60):
            self.stop()
            raise RuntimeError("rtpipeline receive did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            if "receiving DICOM" in line:
                self.ready.set()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


def wait_for_markers(drop: Path, n: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while len(list(drop.glob(f"*/*/{COMPLETE_MARKER}"))) < n:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {len(list(drop.glob(f'*/*/{COMPLETE_MARKER}')))} of {n} associations landed")
        time.sleep(0.01)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=20, help="synthetic patients, one association each")
    parser.add_argument("--slices", type=int, default=147, help="CT slices per patient (+3 RT objects)")
    parser.add_argument("--rows", type=int, default=512, help="CT matrix (rows = columns)")
    parser.add_argument("--keep", type=Path, help="work here and keep the files")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="rt-bench-receive-"))
    options = SynthOptions(rows=args.rows, slices=args.slices, pixel_mm=256.0 / args.rows * 2, slice_mm=2.0)
    try:
        print(
            f"CPUs: {os.cpu_count()}  Python {platform.python_version()}  pydicom {pydicom.__version__}  "
            f"pynetdicom {pynetdicom.__version__}"
        )
        src = work / "export"
        start = time.perf_counter()
        courses = []
        for i in range(args.patients):
            patient = write_patient(src / f"patient_{i:03d}", i, options)
            courses.append(sorted(f.path for c in patient.courses for f in c.files))
        files = [p for course in courses for p in course]
        n, size_mb = len(files), sum(p.stat().st_size for p in files) / 1e6
        print(
            f"generated {n} files ({size_mb:.0f} MB; {args.patients} patients, "
            f"{args.rows}x{args.rows}x{args.slices} CT) in {time.perf_counter() - start:.0f} s (not compared)"
        )
        for path in files:  # untimed warm-up: every method reads from the same page cache
            path.read_bytes()

        results: list[tuple[str, float]] = []
        start = time.perf_counter()
        shutil.copytree(src, work / "drop_copy")
        results.append(("copy into the drop (shutil.copytree)", time.perf_counter() - start))

        start = time.perf_counter()
        copy_fsync(src, work / "drop_copy_fsync")
        results.append(("copy, every file fsync'd", time.perf_counter() - start))

        drop = work / "drop_cstore"
        drop.mkdir()
        port = free_port()
        receiver = Receiver(drop, port)
        try:
            start = time.perf_counter()
            send_courses(port, courses)
            wait_for_markers(drop, args.patients)
            results.append(("C-STORE to rtpipeline receive (loopback)", time.perf_counter() - start))
        finally:
            receiver.stop()
        received = [p for p in drop.rglob("*.dcm") if ".rtpipeline-receive" not in p.parts]
        assert len(received) == n, (len(received), n)

        base = results[0][1]
        print(f"\n{'method':44} {'files':>6} {'seconds':>8} {'files/s':>9} {'MB/s':>7}  vs copy")
        for name, sec in results:
            vs = "baseline" if sec == base else f"{base / sec:.3f}x ({sec / base:.1f}x slower)"
            print(f"{name:44} {n:>6} {sec:>8.2f} {n / sec:>9.0f} {size_mb / sec:>7.1f}  {vs}")
        copy_s, fsync_s, cstore_s = (sec for _, sec in results)
        print(
            f"\nSummary: {n} files ({size_mb:.0f} MB) in {args.patients} associations: C-STORE {n / cstore_s:.0f} "
            f"files/s ({size_mb / cstore_s:.1f} MB/s) against {n / copy_s:.0f} files/s for copying the same files "
            f"into the folder, a ratio of {copy_s / cstore_s:.3f} ({cstore_s / copy_s:.1f}x slower); against a copy "
            f"that fsyncs every file as the receiver does ({n / fsync_s:.0f} files/s), {fsync_s / cstore_s:.2f}."
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
