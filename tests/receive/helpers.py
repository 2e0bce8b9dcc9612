"""A DICOM sender for the receiver's tests: pynetdicom's SCU in the test process."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

import pydicom
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import Verification

from rt_resources.receive import DicomReceiver, ReceiverConfig
from rt_resources.receive.scp import READ_SOP_CLASSES
from rt_resources.synthetic import write_patient
from tests.helpers import SMALL


def _no_delay(event: evt.Event) -> None:
    # as DCMTK and most PACS do: without it every C-STORE waits for the receiver's delayed ACK
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def sender(ae_title: str = "TPS", contexts: Iterable[str] = READ_SOP_CLASSES) -> AE:
    """An SCU proposing each SOP class once per uncompressed transfer syntax, so files go as stored."""
    ae = AE(ae_title=ae_title)
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
        ae.add_requested_context(uid, ImplicitVRLittleEndian)
    ae.add_requested_context(Verification)
    return ae


def associate(port: int, ae_title: str = "TPS", contexts: Iterable[str] = READ_SOP_CLASSES, **kw) -> Association:
    return sender(ae_title, contexts).associate(
        "127.0.0.1", port, ae_title="RTPIPELINE", evt_handlers=[(evt.EVT_CONN_OPEN, _no_delay)], **kw
    )


def send(port: int, files: Iterable[Path], ae_title: str = "TPS", release: bool = True) -> list[int]:
    """Send ``files`` in one association; release it (or abort it) and return each C-STORE status."""
    assoc = associate(port, ae_title)
    assert assoc.is_established, f"association from {ae_title} not established"
    statuses = [int(assoc.send_c_store(Path(f)).Status) for f in files]
    assoc.release() if release else assoc.abort()
    return statuses


def course_files(root: Path, index: int = 0, options=SMALL) -> list[Path]:
    """One synthetic patient (CT, RTSTRUCT, RTPLAN, RTDOSE) written under ``root``: its files."""
    patient = write_patient(root, index, options)
    return [f.path for course in patient.courses for f in course.files]


def with_uid(src: Path, dest: Path, uid: str) -> Path:
    """A copy of ``src`` whose SOP Instance UID (dataset and file meta) is ``uid``, written verbatim."""
    ds = pydicom.dcmread(src)
    ds.SOPInstanceUID = uid
    ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.save_as(dest, enforce_file_format=True)
    return dest


def wait_until(predicate: Callable[[], object], timeout_s: float = 20.0) -> bool:
    """The receiver promotes an association just after answering its A-RELEASE: poll for it."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


def released(receiver: DicomReceiver, n: int = 1) -> bool:
    return wait_until(lambda: receiver.counters.released >= n)


def aborted(receiver: DicomReceiver, n: int = 1) -> bool:
    return wait_until(lambda: receiver.counters.aborted >= n)


@contextmanager
def running(drop: Path, **config):
    """A receiver on a free loopback port, stopped afterwards."""
    receiver = DicomReceiver(ReceiverConfig(drop=drop, bind="127.0.0.1", port=0, **config))
    receiver.start()
    try:
        yield receiver
    finally:
        receiver.stop()


def dicom_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.dcm") if p.is_file())
