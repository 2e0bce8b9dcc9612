"""`rtpipeline receive` as a process: listens, fills the drop, stops cleanly on SIGTERM."""

import os
import signal
import socket
import subprocess
import sys
import threading

from rt_resources.ingest.index import COMPLETE_MARKER
from tests.receive.helpers import associate, course_files, dicom_files, send, wait_until

RTPIPELINE = [sys.executable, "-m", "rt_assets.cli"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    """`rtpipeline receive` in a subprocess, its stderr collected line by line."""

    def __init__(self, *args, env_extra=None):
        env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "RT_DROP_ROOT", "RT_SETTINGS")}
        env.update(env_extra or {})
        self.proc = subprocess.Popen(
            [*RTPIPELINE, "receive", *args], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stderr), daemon=True)
        self._reader.start()

    def text(self) -> str:
        return "".join(self.lines)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=30)
        self._reader.join(timeout=5)
        return code


def test_receive_fills_the_drop_and_stops_on_sigterm(tmp_path, drop):
    files = course_files(tmp_path / "tps")
    port = free_port()
    rx = Receiver(
        "--drop",
        str(drop),
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--allow",
        "TPS@127.0.0.1",
        env_extra={"RT_RECEIVE_AE_TITLE": "RTPIPELINE"},
    )
    try:
        assert wait_until(lambda: "receiving DICOM as AE RTPIPELINE" in rx.text(), 60), rx.text()
        assert f"127.0.0.1:{port}" in rx.text() and "allowed: TPS@127.0.0.1" in rx.text()
        assert associate(port, "STRANGER").is_rejected
        assert set(send(port, files)) == {0x0000}
        assert wait_until(lambda: list(drop.glob(f"TPS/*/{COMPLETE_MARKER}")))
    finally:
        code = rx.stop()
    assert code == 0, rx.text()
    assert len(dicom_files(drop / "TPS")) == len(files)
    assert "rejected association from AE 'STRANGER'" in rx.text()
    assert "receiver stopped: 1 associations released" in rx.text()


def test_open_association_at_sigterm_is_aborted_and_kept_in_staging(tmp_path, drop):
    files = course_files(tmp_path / "tps")
    port = free_port()
    rx = Receiver("--drop", str(drop), "--bind", "127.0.0.1", "--port", str(port))
    try:
        assert wait_until(lambda: "receiving DICOM" in rx.text(), 60), rx.text()
        assoc = associate(port)
        assert all(assoc.send_c_store(f).Status == 0 for f in files[:3])
    finally:
        code = rx.stop()
    assert code == 0
    assert not (drop / "TPS").exists()
    assert len(dicom_files(drop / ".rtpipeline-receive" / "staging")) == 3
    assert "aborted after 3 instance(s)" in rx.text()


def test_bad_arguments_exit_2_and_a_busy_port_exits_1(tmp_path, drop):
    def run(*args):
        env = {k: v for k, v in os.environ.items() if k not in ("RT_DROP_ROOT", "RT_SETTINGS", "DAGSTER_HOME")}
        return subprocess.run([*RTPIPELINE, "receive", *args], capture_output=True, text=True, timeout=60, env=env)

    no_drop = run("--port", "0")
    assert no_drop.returncode == 2 and "--drop" in no_drop.stderr
    missing = run("--drop", str(tmp_path / "nowhere"), "--port", "0")
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_host = run("--drop", str(drop), "--port", "0", "--allow", "TPS@no-such-host.invalid")
    assert bad_host.returncode == 2 and "no-such-host.invalid" in bad_host.stderr
    bad_tls = run("--drop", str(drop), "--port", "0", "--tls", "a.pem", "b.key", "ca.pem")
    assert bad_tls.returncode == 2 and "a.pem does not exist" in bad_tls.stderr
    bad_port = run("--drop", str(drop), "--port", "70000")
    assert bad_port.returncode == 2 and "receive.port" in bad_port.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = run("--drop", str(drop), "--bind", "127.0.0.1", "--port", str(busy.getsockname()[1]))
    assert taken.returncode == 1 and "cannot listen" in taken.stderr


def test_options_override_the_environment_which_overrides_the_defaults(tmp_path, drop):
    from rt_assets.cli import build_parser
    from rt_assets.commands import receive_overrides
    from rt_resources.settings import load_settings

    args = build_parser().parse_args(["receive", "--drop", str(drop), "--port", "104", "--allow", "TPS@10.0.0.1"])
    environ = {"RT_RECEIVE_PORT": "11113", "RT_RECEIVE_ALLOW": "A,B@h", "RT_RECEIVE_STALE_AFTER_H": "2"}
    rx = load_settings(environ=environ, overrides=receive_overrides(args)).receive
    assert (rx.port, rx.allow, rx.stale_after_h, rx.ae_title) == (104, ["TPS@10.0.0.1"], 2.0, "RTPIPELINE")
    assert load_settings(environ=environ).receive.allow == ["A", "B@h"]
