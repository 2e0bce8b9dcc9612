"""The C-STORE endpoint against pynetdicom's SCU: echo, allow list, bad input, concurrency, TLS."""

import errno
import json
import os
import shutil
import ssl
import subprocess
import threading
import time

import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage, RTBeamsTreatmentRecordStorage, UltrasoundImageStorage, Verification

from rt_resources.ingest.index import COMPLETE_MARKER, RECEIVER_FOLDER
from rt_resources.ingest.survey import survey_drop
from rt_resources.receive import AllowRule, TlsFiles, staging
from tests.receive.helpers import (
    aborted,
    associate,
    course_files,
    dicom_files,
    released,
    running,
    send,
    wait_until,
    with_uid,
)


def log_events(drop, kind):
    lines = (drop / RECEIVER_FOLDER / "receive_log.jsonl").read_text().splitlines()
    return [e for e in map(json.loads, lines) if e["event"] == kind]


def test_c_echo(drop):
    with running(drop) as receiver:
        assoc = associate(receiver.port)
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()
        assert released(receiver)
    assert not any(p.name != RECEIVER_FOLDER for p in drop.iterdir())  # an echo writes nothing


def test_disallowed_calling_ae_or_host_is_rejected(tmp_path, drop):
    files = course_files(tmp_path / "tps")[:2]
    rules = [AllowRule.parse("TPS@127.0.0.1"), AllowRule.parse("PACS@10.20.0.0/16")]
    with running(drop, allow=rules) as receiver:
        for ae_title in ("OTHER", "PACS"):  # unknown AE; known AE from a host outside its network
            assoc = associate(receiver.port, ae_title)
            assert assoc.is_rejected and not assoc.is_established
            rj = assoc.acceptor.primitive
            assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)  # calling AE not recognised
        assert set(send(receiver.port, files, "TPS")) == {0x0000}
        assert released(receiver)
    assert [p.name for p in drop.iterdir() if p.name != RECEIVER_FOLDER] == ["TPS"]
    rejected = log_events(drop, "rejected")
    assert [e["calling_ae"] for e in rejected] == ["OTHER", "PACS"] and rejected[0]["address"] == "127.0.0.1"


def test_allow_rules_parse_hosts_networks_and_refuse_nonsense():
    assert AllowRule.parse("TPS").allows("TPS", "192.0.2.7")
    assert AllowRule.parse("TPS@localhost").allows("TPS", "127.0.0.1")
    assert AllowRule.parse("TPS@10.0.0.0/8").allows("TPS ", "::ffff:10.1.2.3")  # IPv4-mapped, padded AE
    assert not AllowRule.parse("TPS@10.0.0.0/8").allows("TPS", "11.0.0.1")
    assert not AllowRule.parse("TPS@10.0.0.1").allows("PACS", "10.0.0.1")
    for bad in ("@10.0.0.1", "A_TITLE_LONGER_THAN_16", "TPS@no-such-host.invalid"):
        with pytest.raises(staging.ReceiveError, match="--allow"):
            AllowRule.parse(bad)


def test_ten_associations_at_once_all_land(tmp_path, drop):
    courses = [course_files(tmp_path / "tps", i) for i in range(10)]
    statuses: dict[int, list[int]] = {}
    with running(drop) as receiver:

        def one(i):
            statuses[i] = send(receiver.port, courses[i], ae_title=f"TPS{i}")

        threads = [threading.Thread(target=one, args=(i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert released(receiver, 10)
    assert all(set(statuses[i]) == {0x0000} for i in range(10))
    folders = [f for ae in drop.glob("TPS*") for f in ae.iterdir()]
    assert len(folders) == 10 and all((f / COMPLETE_MARKER).is_file() for f in folders)
    assert len(dicom_files(drop)) == sum(map(len, courses))
    assert len(survey_drop(drop, tmp_path / "data").courses) == 10


@pytest.mark.parametrize("uid", ["1.2.3/../../../tmp/evil", "..", "1.2..3", "1.2.3/", "1.2.3.x"])
def test_a_uid_that_could_leave_staging_is_refused(tmp_path, drop, uid):
    files = course_files(tmp_path / "tps")
    evil = with_uid(files[0], tmp_path / "evil.dcm", uid)
    before = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    with running(drop) as receiver:
        statuses = send(receiver.port, [evil, *files[1:3]])
        assert released(receiver)
    assert statuses == [0x0117, 0x0000, 0x0000]  # Invalid Object Instance (PS3.7 C: UID construction rules)
    (folder,) = (drop / "TPS").iterdir()
    # what was stored is in the drop, without _COMPLETE: the sender knows one failed (quiet period decides)
    assert len(dicom_files(folder)) == 2 and not (folder / COMPLETE_MARKER).exists()
    assert sorted(p for p in tmp_path.rglob("*") if p.is_file() and not p.is_relative_to(drop)) == before
    (refused,) = log_events(drop, "refused")
    assert refused["sop_instance_uid"] == uid and refused["status"] == "0x0117"


def test_disk_full_fails_with_a700_and_leaves_no_partial_file(tmp_path, drop, monkeypatch, caplog):
    """A full disk is simulated: the one function that writes bytes (staging._write_bytes) writes
    half of the instance and then raises OSError(ENOSPC), as os.write does on a full file system."""
    files = course_files(tmp_path / "tps")[:3]
    real_write = staging._write_bytes
    calls = []

    def full_disk(fd, data):
        calls.append(len(data))
        if len(calls) == 2:
            real_write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fd, data)

    monkeypatch.setattr(staging, "_write_bytes", full_disk)
    with running(drop) as receiver:
        assoc = associate(receiver.port)
        statuses = [int(assoc.send_c_store(f).Status) for f in files[:2]]
        staged = [p for p in (drop / RECEIVER_FOLDER / "staging").rglob("*") if p.is_file()]
        assoc.abort()  # look at staging before anything moves
        assert aborted(receiver)
    assert statuses == [0x0000, 0xA700]
    assert [p.name for p in staged] == [f"{pydicom.dcmread(files[0]).SOPInstanceUID}.dcm"]  # no partial, no temp
    assert pydicom.dcmread(staged[0]).SOPInstanceUID  # the complete one is intact
    assert "disk full" in caplog.text and "TPS" in caplog.text


def test_undecodable_data_set_is_refused_with_c210(tmp_path, drop, caplog):
    good = course_files(tmp_path / "tps")[0]
    ds = pydicom.dcmread(good)
    raw = tmp_path / "garbage.dcm"
    pydicom.dcmwrite(raw, ds, enforce_file_format=True)
    data = raw.read_bytes()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")
    raw.write_bytes(data[:meta_end] + bytes(range(256)) * 4)  # valid file meta, then noise
    with running(drop) as receiver:
        assert send(receiver.port, [raw]) == [0xC210]
        assert released(receiver)
    assert not dicom_files(drop)
    assert ds.SOPInstanceUID in caplog.text and "'TPS'" in caplog.text and "cannot be decoded" in caplog.text


def test_data_set_not_matching_its_request_is_refused_with_a900(tmp_path, drop):
    good = course_files(tmp_path / "tps")[0]
    ds = pydicom.dcmread(good)
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()  # the request names another instance
    odd = tmp_path / "odd.dcm"
    ds.save_as(odd, enforce_file_format=False)
    with running(drop) as receiver:
        assert send(receiver.port, [odd]) == [0xA900]
        assert released(receiver)
    assert not dicom_files(drop)


def test_unsupported_sop_class_or_transfer_syntax_is_rejected_at_negotiation(drop):
    ae = AE(ae_title="TPS")
    ae.add_requested_context(UltrasoundImageStorage)
    ae.add_requested_context(CTImageStorage, [JPEG2000Lossless])  # compressed only
    ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
    with running(drop) as receiver:
        assoc = ae.associate("127.0.0.1", receiver.port, ae_title="RTPIPELINE")
        assert assoc.is_established
        # PS3.8 9.3.3.2: 3 = abstract syntax not supported, 4 = transfer syntaxes not supported
        rejected = sorted((cx.abstract_syntax, cx.result) for cx in assoc.rejected_contexts)
        assert rejected == sorted([(UltrasoundImageStorage, 0x03), (CTImageStorage, 0x04)])
        assert [cx.abstract_syntax for cx in assoc.accepted_contexts] == [CTImageStorage]
        us = Dataset()
        us.SOPClassUID, us.SOPInstanceUID = UltrasoundImageStorage, generate_uid()
        us.file_meta = FileMetaDataset()
        us.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        with pytest.raises(ValueError, match="No presentation context"):
            assoc.send_c_store(us)
        assoc.release()
        assert released(receiver)


def test_an_rt_treatment_record_lands_and_is_listed_as_unused(tmp_path, drop):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = RTBeamsTreatmentRecordStorage
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.Modality, ds.PatientID = RTBeamsTreatmentRecordStorage, "RTRECORD", "P1"
    record = tmp_path / "record.dcm"
    ds.save_as(record, enforce_file_format=True)
    with running(drop) as receiver:
        assoc = associate(receiver.port, contexts=[RTBeamsTreatmentRecordStorage])
        assert assoc.send_c_store(record).Status == 0x0000
        assoc.release()
        assert released(receiver)
    (rejection,) = survey_drop(drop, tmp_path / "data").links.rejections
    assert rejection.path.startswith("TPS/") and "Treatment Record is not used" in rejection.reason


def test_released_association_is_promoted_in_one_move(tmp_path, drop):
    """The drop never shows a half-received association: the folder appears with all its files."""
    files = course_files(tmp_path / "tps")
    seen: list[int] = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            for folder in drop.glob("TPS/*"):
                seen.append(len(list(folder.glob("*.dcm"))))
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with running(drop) as receiver:
            send(receiver.port, files)
            assert released(receiver)
            assert wait_until(lambda: len(seen) > 0)
    finally:
        stop.set()
        watcher.join()
    assert set(seen) == {len(files)}


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command to make certificates")
def test_tls_needs_a_client_certificate_from_the_ca(tmp_path, drop):
    pki = make_pki(tmp_path / "pki")
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki["ca"])
    client.check_hostname = False
    client.load_cert_chain(pki["client"], pki["client_key"])
    anonymous = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki["ca"])
    anonymous.check_hostname = False
    with running(drop, tls=TlsFiles(pki["server"], pki["server_key"], pki["ca"])) as receiver:
        assoc = associate(receiver.port, tls_args=(client, None))
        assert assoc.is_established and assoc.send_c_echo().Status == 0x0000
        assoc.release()
        refused = associate(receiver.port, tls_args=(anonymous, None))
        assert not refused.is_established
        plain = associate(receiver.port)
        assert not plain.is_established


def make_pki(folder):
    """A CA, a server and a client certificate signed by it (openssl, 2048-bit RSA)."""
    folder.mkdir()
    p = {k: folder / f"{k}.pem" for k in ("ca", "ca_key", "server", "server_key", "client", "client_key")}

    def run(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, cwd=folder)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
        "-keyout",
        p["ca_key"],
        "-out",
        p["ca"],
    )
    for who in ("server", "client"):
        run(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            f"/CN={who}",
            "-keyout",
            p[f"{who}_key"],
            "-out",
            folder / f"{who}.csr",
        )
        run(
            "x509",
            "-req",
            "-in",
            folder / f"{who}.csr",
            "-CA",
            p["ca"],
            "-CAkey",
            p["ca_key"],
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            p[who],
        )
    return p


def test_verification_is_always_offered(drop):
    ae = AE(ae_title="ANY")
    ae.add_requested_context(Verification)
    with running(drop) as receiver:
        assoc = ae.associate("127.0.0.1", receiver.port)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.release()


def test_staging_left_by_an_earlier_receiver_is_reported_at_start_and_kept(drop, caplog):
    area = staging.StagingArea(drop)
    area.prepare()
    left = area.begin("TPS", "10.0.0.9:4000")
    path = area.write_instance(left, "1.2.3.4", b"not yet checked by anyone")
    two_days_ago = time.time() - 48 * 3600
    for p in (path, left.folder):
        os.utime(p, (two_days_ago, two_days_ago))
    with running(drop, stale_after_s=24 * 3600) as receiver:
        assert receiver.report_stale() == []  # reported once, at start
    (stale,) = log_events(drop, "stale")
    assert stale["staging"] == left.folder.relative_to(drop).as_posix() and stale["files"] == 1
    assert stale["age_h"] >= 48 and path.is_file()
    assert "stale staging" in caplog.text and "never released" in caplog.text
