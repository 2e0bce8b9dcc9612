"""The DICOM receiver: a Storage SCP (C-STORE) and Verification SCP (C-ECHO) that fills the drop.

Built on pynetdicom. Each association writes into its own staging folder (see
:mod:`rt_resources.receive.staging`); a normal release moves the folder into
``DROP/<calling AE>/<association id>/`` with a ``_COMPLETE`` marker, and the drop sensor's rules
(quiet period, marker, content-fingerprinted run key) take over unchanged. An aborted association
is never promoted.

Negotiation
    The SOP classes the pipeline reads (:data:`READ_SOP_CLASSES`: CT, MR, PET, RT Structure Set,
    RT Plan, RT Ion Plan, RT Dose, Spatial and Deformable Spatial Registration) and RT objects it
    keeps but does not use (:data:`KEPT_SOP_CLASSES`: treatment records, RT Image, enhanced
    multi-frame CT/MR, second-generation RT; the index lists them as unused with the reason),
    plus Verification. Any other SOP class is rejected at negotiation (its presentation context
    gets "abstract syntax not supported"). Transfer syntaxes: the uncompressed ones (Implicit and
    Explicit VR Little Endian, Deflated, Explicit VR Big Endian; Implicit VR Little Endian is the
    default every DICOM AE supports, PS3.5 10.1); a compressed-only offer is rejected rather than
    landing pixels the pipeline's readers may not decode.

C-STORE statuses (PS3.4 B.2.3, PS3.7 C)
    ``0x0000`` stored and fsync'd.
    ``0x0117`` Invalid Object Instance: the Affected SOP Instance UID is not a valid UID (anything
    but digits and dots, such as ``/`` or ``..``). PS3.7 Annex C defines this general status for a
    SOP Instance UID that violates the UID construction rules, which is exactly the case, and the
    C-STORE service may return it (PS3.7 9.1.1.1.9). ``0xA900`` would claim the data set does not fit the SOP
    Class and ``0xCxxx`` that it could not be parsed; neither is what went wrong.
    ``0xA700`` Refused, out of resources: the disk (or quota) is full; the partial file is removed.
    ``0xA701`` Refused, out of resources: any other error writing the file (permissions, I/O).
    ``0xA900`` Data Set does not match SOP Class: the data set's SOP Class or Instance UID
    (0008,0016)/(0008,0018) is not the one of the C-STORE request, or is missing.
    ``0xC210`` Cannot understand: the data set cannot be decoded (pydicom fails on it).
    Every refusal is logged naming the calling AE, its address, the association and the UID, and
    recorded in ``receive_log.jsonl``; nothing refused is written.

An association that stored anything and was refused something is still promoted on release, but
without ``_COMPLETE``: the sender knows some instances failed and may send them again, so the
quiet period decides when the course starts.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pydicom import uid as ts
from pydicom.dataset import Dataset
from pynetdicom import AE, evt
from pynetdicom import sop_class as sop
from pynetdicom.association import Association
from pynetdicom.transport import ThreadedAssociationServer

from rt_resources.dicom.sop_classes import KIND_BY_SOP_CLASS, UNSUPPORTED_SOP_CLASSES
from rt_resources.receive.config import ListenError, ReceiverConfig
from rt_resources.receive.decode import UndecodableError, decode_instance
from rt_resources.receive.staging import (
    NO_SPACE,
    StagedAssociation,
    StagingArea,
    UnsafeUIDError,
)

log = logging.getLogger(__name__)

#: SOP classes the pipeline reads (the index classifies them into CT, MR, PT, RTSTRUCT, RTPLAN, RTDOSE, REG)
READ_SOP_CLASSES: tuple[str, ...] = tuple(KIND_BY_SOP_CLASS)
#: accepted and kept in the drop, where the index lists them as unused (with the reason)
KEPT_SOP_CLASSES: tuple[str, ...] = (
    *UNSUPPORTED_SOP_CLASSES,
    sop.RTBrachyTreatmentRecordStorage,
    sop.RTTreatmentSummaryRecordStorage,
    sop.RTIonBeamsTreatmentRecordStorage,
    sop.EnhancedRTImageStorage,
    sop.EnhancedContinuousRTImageStorage,
    sop.RTBeamsDeliveryInstructionStorage,
    sop.RTBrachyApplicationSetupDeliveryInstructionsStorage,
    sop.RTPhysicianIntentStorage,
    sop.RTSegmentAnnotationStorage,
    sop.RTRadiationSetStorage,
    sop.RTRadiationSetDeliveryInstructionStorage,
    sop.RTRadiationRecordSetStorage,
    sop.RTRadiationSalvageRecordStorage,
    sop.RTTreatmentPreparationStorage,
    sop.RTPatientPositionAcquisitionInstructionStorage,
)
#: uncompressed transfer syntaxes (see the module docstring)
TRANSFER_SYNTAXES: tuple[str, ...] = (
    ts.ImplicitVRLittleEndian,
    ts.ExplicitVRLittleEndian,
    ts.DeflatedExplicitVRLittleEndian,
    ts.ExplicitVRBigEndian,
)

SUCCESS = 0x0000
INVALID_SOP_INSTANCE = 0x0117
OUT_OF_RESOURCES = 0xA700
OUT_OF_RESOURCES_OTHER = 0xA701
DATASET_MISMATCH = 0xA900
CANNOT_UNDERSTAND = 0xC210
#: A-ASSOCIATE-RJ: rejected permanent, by the service user, calling AE title not recognised (PS3.8 9.3.4)
REJECT_CALLING_AE = (0x01, 0x01, 0x03)


def _no_delay(event: evt.Event) -> None:
    """TCP_NODELAY on the connection: DIMSE is request/response, and Nagle's algorithm against the
    peer's delayed ACK costs up to 40 ms per message."""
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not a TCP socket
            pass


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]
    return status


@dataclass
class _Counters:
    released: int = 0
    aborted: int = 0
    rejected: int = 0
    stored: int = 0
    refused: int = 0
    reported_stale: set[Path] = field(default_factory=set)


class DicomReceiver:
    """A C-STORE/C-ECHO endpoint writing into one drop folder through staging.

    ``start()`` listens in background threads (one per association) and returns; ``stop()``
    aborts the associations still open (their files stay in staging) and closes the socket.
    ``serve(stop_event)`` is the long-running form the CLI uses."""

    def __init__(self, config: ReceiverConfig) -> None:
        self.config = config
        self.staging = StagingArea(config.drop)
        self._sessions: dict[Association, StagedAssociation] = {}
        self._lock = threading.Lock()
        self._report_lock = threading.Lock()  #: one stale report at a time (sweeper, start, callers)
        self._server: ThreadedAssociationServer | None = None
        self._ae: AE | None = None
        self._stop = threading.Event()
        self._sweeper: threading.Thread | None = None
        self.counters = _Counters()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> tuple[str, int]:
        """Prepare the staging folder, report stale associations, listen; return ``(host, port)``."""
        cfg = self.config
        self.staging.prepare()
        ssl_context = cfg.tls.context() if cfg.tls else None
        ae = AE(ae_title=cfg.ae_title)
        ae.maximum_associations = cfg.max_associations
        ae.network_timeout = cfg.network_timeout_s
        for uid in (*READ_SOP_CLASSES, *KEPT_SOP_CLASSES):
            ae.add_supported_context(uid, list(TRANSFER_SYNTAXES))
        ae.add_supported_context(sop.Verification)
        handlers = [
            (evt.EVT_CONN_OPEN, _no_delay),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_CONN_CLOSE, self._on_conn_close),
        ]
        try:
            server = ae.start_server((cfg.bind, cfg.port), block=False, ssl_context=ssl_context, evt_handlers=handlers)
        except OSError as exc:
            raise ListenError(f"cannot listen on {cfg.bind}:{cfg.port}: {exc.strerror or exc}") from exc
        assert server is not None
        self._ae, self._server = ae, server
        host, port = server.server_address[:2]
        left = self.staging.folders()
        if left:
            log.info("%d association folder(s) left in staging %s (aborted earlier)", len(left), self.staging.staging)
        self.report_stale()
        self._stop.clear()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="receive-sweeper", daemon=True)
        self._sweeper.start()
        allow = ", ".join(r.text for r in cfg.allow) or "any calling AE"
        log.info(
            "receiving DICOM as AE %s on %s:%d%s into %s (allowed: %s; %.1f GB free)",
            cfg.ae_title,
            host,
            port,
            " (TLS)" if ssl_context else "",
            self.staging.drop,
            allow,
            self.staging.free_bytes() / 1e9,
        )
        self.staging.record("started", ae_title=cfg.ae_title, host=str(host), port=int(port), tls=bool(ssl_context))
        return str(host), int(port)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("receiver not started")
        return int(self._server.server_address[1])

    def serve(self, stop: threading.Event) -> None:
        """Start, then block until ``stop`` is set; then stop."""
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()

    def stop(self) -> None:
        """Abort open associations (their files stay in staging), close the socket."""
        self._stop.set()
        if self._ae is not None:
            self._ae.shutdown()
            self._ae = None
            self._server = None
        if self._sweeper is not None:
            self._sweeper.join(timeout=5)
            self._sweeper = None
        self._reap_orphans()
        c = self.counters
        self.staging.record("stopped", released=c.released, aborted=c.aborted, stored=c.stored, refused=c.refused)
        log.info(
            "receiver stopped: %d associations released, %d aborted, %d rejected; %d instances stored, %d refused",
            c.released,
            c.aborted,
            c.rejected,
            c.stored,
            c.refused,
        )

    def __enter__(self) -> DicomReceiver:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ stale staging
    def report_stale(self, now: float | None = None) -> list[Path]:
        """Report (WARNING, and a ``stale`` line in receive_log.jsonl) each staging folder older than
        ``stale_after_s`` that no live association owns, once per process; nothing is deleted."""
        with self._lock:
            active = {s.folder for s in self._sessions.values()}
        with self._report_lock:
            return self._report_stale(active, now)

    def _report_stale(self, active: set[Path], now: float | None) -> list[Path]:
        stale = self.staging.stale(self.config.stale_after_s, active, now)
        reported = []
        for item in stale:
            if item.folder in self.counters.reported_stale:
                continue
            self.counters.reported_stale.add(item.folder)
            reported.append(item.folder)
            log.warning(
                "stale staging %s: %d files (%.1f MB), last written %.1f h ago, never released (aborted "
                "association). Not in the drop; move it to %s/%s/ and add a _COMPLETE file to use it, or delete it",
                item.folder,
                item.files,
                item.bytes / 1e6,
                item.age_s / 3600,
                self.staging.drop,
                item.folder.relative_to(self.staging.staging).as_posix(),
            )
            self.staging.record("stale", **item.as_record(self.staging.drop))
        self.counters.reported_stale &= set(self.staging.folders())
        return reported

    def _sweep_loop(self) -> None:
        while not self._stop.wait(self.config.sweep_interval_s):
            try:
                self._reap_orphans()
                self.report_stale()
            except Exception:  # the sweep must never stop the receiver
                log.exception("staging sweep failed")

    def _reap_orphans(self) -> None:
        """Finish, as aborted, sessions whose association thread ended without a release or abort event."""
        with self._lock:
            orphans = [(a, s) for a, s in self._sessions.items() if not a.is_alive()]
        for assoc, staged in orphans:
            self._finish(assoc, staged, released=False, why="association ended without release")

    # ------------------------------------------------------------------ event handlers
    def _on_requested(self, event: evt.Event) -> None:
        """Allow list: reject an association whose calling AE (and address) no rule allows."""
        if not self.config.allow:
            return
        assoc = event.assoc
        calling = str(assoc.requestor.primitive.calling_ae_title).strip()
        address = str(assoc.requestor.address)
        if any(rule.allows(calling, address) for rule in self.config.allow):
            return
        with self._lock:
            self.counters.rejected += 1
        log.warning(
            "rejected association from AE %r at %s: not in the allow list (%s)",
            calling,
            address,
            ", ".join(r.text for r in self.config.allow),
        )
        self.staging.record("rejected", calling_ae=calling, address=address, reason="not in the allow list")
        assoc.acse.send_reject(*REJECT_CALLING_AE)
        assoc.kill()

    def _on_established(self, event: evt.Event) -> None:
        self._session(event.assoc)  # its staging folder is made with its first instance

    def _session(self, assoc: Association) -> StagedAssociation:
        with self._lock:
            staged = self._sessions.get(assoc)
            if staged is None:
                peer = f"{assoc.requestor.address}:{assoc.requestor.port}"
                staged = self.staging.begin(str(assoc.requestor.ae_title), peer)
                self._sessions[assoc] = staged
            return staged

    def _on_c_store(self, event: evt.Event) -> Dataset | int:
        staged = self._session(event.assoc)
        request = event.request
        uid = str(request.AffectedSOPInstanceUID or "")
        sop_class = str(request.AffectedSOPClassUID or "")
        try:
            status = self._store(staged, uid, sop_class, event)
        except Exception as exc:  # a bug here must not kill the association thread silently
            log.exception("%s: SOP instance %r failed unexpectedly", staged.describe(), uid)
            status = _status(CANNOT_UNDERSTAND, f"receiver error: {type(exc).__name__}")
        code = status if isinstance(status, int) else int(status.Status)
        with self._lock:
            if code == SUCCESS:
                staged.stored += 1
                self.counters.stored += 1
            else:
                staged.failed += 1
                self.counters.refused += 1
        return status

    def _refuse(self, staged: StagedAssociation, uid: str, code: int, why: str) -> Dataset:
        log.error("%s: refused SOP instance %r (status 0x%04X): %s", staged.describe(), uid, code, why)
        self.staging.record(
            "refused",
            assoc_id=staged.assoc_id,
            calling_ae=staged.calling_ae,
            peer=staged.peer,
            sop_instance_uid=uid,
            status=f"0x{code:04X}",
            reason=why,
        )
        return _status(code, why)

    def _store(self, staged: StagedAssociation, uid: str, sop_class: str, event: evt.Event) -> Dataset | int:
        data = event.encoded_dataset()
        try:
            ds_class, ds_uid = decode_instance(data)
        except UndecodableError as exc:
            return self._refuse(staged, uid, CANNOT_UNDERSTAND, f"data set cannot be decoded: {exc}")
        if ds_class != sop_class or ds_uid != uid:
            return self._refuse(
                staged,
                uid,
                DATASET_MISMATCH,
                f"data set SOP Class/Instance UID {ds_class or 'missing'} / {ds_uid or 'missing'} differ from "
                f"the request's {sop_class} / {uid}",
            )
        with staged.lock:
            try:
                path = self.staging.write_instance(staged, uid, data)
            except UnsafeUIDError as exc:
                return self._refuse(staged, uid, INVALID_SOP_INSTANCE, str(exc))
            except OSError as exc:
                full = exc.errno in NO_SPACE
                code = OUT_OF_RESOURCES if full else OUT_OF_RESOURCES_OTHER
                what = "disk full" if full else "cannot write"
                return self._refuse(
                    staged, uid, code, f"{what} in staging {staged.folder}: {exc.strerror or exc}; nothing kept"
                )
        log.debug("%s: stored %s", staged.describe(), path.name)
        return SUCCESS

    def _on_released(self, event: evt.Event) -> None:
        staged = self._sessions.get(event.assoc)
        if staged is not None:
            self._finish(event.assoc, staged, released=True, why="released")

    def _on_aborted(self, event: evt.Event) -> None:
        staged = self._sessions.get(event.assoc)
        if staged is not None:
            self._finish(event.assoc, staged, released=False, why="aborted")

    def _on_conn_close(self, event: evt.Event) -> None:
        """A connection that closed without release or abort (the peer vanished): once the
        association's thread has ended, an unfinished session is finished as aborted."""
        assoc = event.assoc
        staged = self._sessions.get(assoc)
        if staged is None or staged.finished:
            return

        def finish_after_thread() -> None:
            if assoc is not threading.current_thread():
                assoc.join(timeout=max(30.0, self.config.network_timeout_s))
            if not staged.finished:
                self._finish(assoc, staged, released=False, why="connection closed without release")

        threading.Thread(target=finish_after_thread, name=f"receive-close-{staged.assoc_id}", daemon=True).start()

    def _finish(self, assoc: Association, staged: StagedAssociation, released: bool, why: str) -> None:
        with staged.lock:
            if staged.finished:
                return
            staged.finished = True
            try:
                self._finish_locked(staged, released, why)
            finally:
                with self._lock:
                    self._sessions.pop(assoc, None)

    def _finish_locked(self, staged: StagedAssociation, released: bool, why: str) -> None:
        fields = {
            "assoc_id": staged.assoc_id,
            "calling_ae": staged.calling_ae,
            "peer": staged.peer,
            "stored": staged.stored,
            "refused": staged.failed,
        }
        if staged.stored == 0:
            self.staging.discard_if_empty(staged)
            if released:
                self.counters.released += 1
            else:
                self.counters.aborted += 1
            log.debug("%s %s with nothing stored", staged.describe(), why)
            return
        if not released:
            self.counters.aborted += 1
            log.warning(
                "%s %s after %d instance(s): no _COMPLETE, files kept in staging %s (reported after %.0f h)",
                staged.describe(),
                why,
                staged.stored,
                staged.folder,
                self.config.stale_after_s / 3600,
            )
            self.staging.record("aborted", why=why, staging=self._rel(staged.folder), **fields)
            return
        complete = staged.failed == 0
        try:
            dest = self.staging.promote(staged, complete=complete)
        except OSError as exc:
            self.counters.aborted += 1
            log.error(
                "%s released but its folder %s could not be moved into the drop (%s): kept in staging",
                staged.describe(),
                staged.folder,
                exc.strerror or exc,
            )
            self.staging.record("promote_failed", error=str(exc), staging=self._rel(staged.folder), **fields)
            return
        self.counters.released += 1
        if complete:
            log.info("%s released: %d instance(s) -> %s with _COMPLETE", staged.describe(), staged.stored, dest)
        else:
            log.warning(
                "%s released with %d refused instance(s): %d -> %s without _COMPLETE (the quiet period decides)",
                staged.describe(),
                staged.failed,
                staged.stored,
                dest,
            )
        self.staging.record("released", path=self._rel(dest), complete=complete, **fields)

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.staging.drop).as_posix()
