"""The daemon that launches the instance's queued runs, started by ``rtpipeline run`` when none runs.

``rtpipeline run`` only submits runs; a Dagster daemon launches them. When a daemon already
heartbeats for the instance (``dagster dev``, ``dagster-daemon run``, or another deployment's),
the CLI uses it. Otherwise it starts this one for the duration of the command: Dagster's own
run-queue coordinator and run monitoring, on the project's code location, and nothing else (no
sensors or automation: the CLI decides what to run, so nothing starts behind its back). It
heartbeats every 5 s and lives in its own session, so a Ctrl-C in the terminal reaches the CLI,
which cancels its runs and stops it. If the CLI is killed (``kill -9``), the daemon outlives it
just long enough: it goes on launching the runs already queued and exits once none is queued or
in flight, so a crash of the CLI never leaves a run half-launched, nor a daemon behind.

``python -m rt_assets.headless.daemon`` runs it (``DAGSTER_HOME`` names the instance).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from rt_assets.constants import CODE_LOCATION

QUEUE_DAEMON_TYPE = "QUEUED_RUN_COORDINATOR"
HEARTBEAT_INTERVAL_S = 5
#: a daemon heartbeating within this many seconds is alive (``dagster-daemon`` beats every 30 s)
LIVE_TOLERANCE_S = 75.0
STATE_FILE = ".rtpipeline-daemon.json"  #: in the Dagster home: pid and daemon id of the CLI's daemon
DEQUEUE_INTERVAL_S = 1


def _state(home: Path) -> dict:
    try:
        return json.loads((Path(home) / STATE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _pid_alive(pid: int) -> bool:
    from rt_assets.run_launcher import worker_alive

    return worker_alive(pid, time.time())


def running_daemon(instance, home: Path, now: float | None = None) -> str | None:
    """Who launches this instance's queued runs: a description of the live daemon, or None.

    A queue-daemon heartbeat younger than :data:`LIVE_TOLERANCE_S` counts, unless it is the last
    beat of an rtpipeline daemon whose process is gone (a crashed CLI's)."""
    now = time.time() if now is None else now
    beat = instance.get_daemon_heartbeats().get(QUEUE_DAEMON_TYPE)
    if beat is None or now - beat.timestamp > LIVE_TOLERANCE_S:
        return None
    state = _state(home)
    if state.get("daemon_id") and state["daemon_id"] == beat.daemon_id:
        if _pid_alive(int(state.get("pid", 0))):
            return f"rtpipeline's daemon (pid {state['pid']})"
        return None
    return f"a Dagster daemon (id {str(beat.daemon_id)[:8]}, last heartbeat {now - beat.timestamp:.0f} s ago)"


def _child_setup() -> None:  # pragma: no cover - runs in the child before exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python then turns SIGINT into KeyboardInterrupt
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


ORPHAN_CHECK_S = 5.0


def _exit_when_orphaned_and_idle(instance, parent: int) -> None:
    """Once the CLI that started this daemon is gone, exit (SIGINT to ourselves: a clean stop)
    as soon as no run of the instance is queued or in flight."""
    from dagster import RunsFilter

    from rt_assets.constants import UNFINISHED_RUNS

    busy = list(UNFINISHED_RUNS)
    while True:
        time.sleep(ORPHAN_CHECK_S)
        if os.getppid() == parent:
            continue
        try:
            if not instance.get_runs(RunsFilter(statuses=busy), limit=1):
                os.kill(os.getpid(), signal.SIGINT)
                return
        except Exception:  # the instance may be briefly locked: look again
            continue


class QueueDaemon:
    """The CLI's own daemon process (see the module docstring)."""

    def __init__(self, home: Path, log_path: Path) -> None:
        self.home = Path(home)
        self.log_path = Path(log_path)
        self.proc: subprocess.Popen | None = None

    def launch(self) -> None:
        """Start the daemon process (returns at once; :meth:`wait_ready` waits for its heartbeat)."""
        (self.home / STATE_FILE).unlink(missing_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "rt_assets.headless.daemon"],
                env={**os.environ, "DAGSTER_HOME": str(self.home)},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_child_setup,
            )
        self._ready = False

    def wait_ready(self, instance, timeout_s: float = 180.0) -> None:
        """Wait for the daemon's first heartbeat (its code location has loaded)."""
        if self.proc is None:
            self.launch()
        if getattr(self, "_ready", False):
            return
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the run-queue daemon exited at start (code {self.proc.returncode}); its log: {self.log_path}\n"
                    + _tail(self.log_path)
                )
            state = _state(self.home)
            beat = instance.get_daemon_heartbeats().get(QUEUE_DAEMON_TYPE)
            if state.get("pid") == self.proc.pid and beat is not None and beat.daemon_id == state.get("daemon_id"):
                self._ready = True
                return
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"the run-queue daemon did not heartbeat within {timeout_s:.0f} s; log: {self.log_path}")

    def start(self, instance, timeout_s: float = 180.0) -> None:
        """Start the daemon and wait for its first heartbeat."""
        self.launch()
        self.wait_ready(instance, timeout_s)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the daemon (SIGINT: it shuts its code server down), SIGKILL if it does not exit."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return ""


def _daemons(instance):
    from dagster._daemon.daemon import MonitoringDaemon
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

    daemons = [QueuedRunCoordinatorDaemon(interval_seconds=DEQUEUE_INTERVAL_S)]
    if instance.run_monitoring_enabled:
        daemons.append(MonitoringDaemon(interval_seconds=instance.run_monitoring_poll_interval_seconds))
    return daemons


def main() -> None:
    """Run the queue coordinator and run monitoring until interrupted."""
    import threading

    from dagster import DagsterInstance
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.controller import daemon_controller_from_instance

    from rt_resources.fileio import write_json_atomic

    home = Path(os.environ["DAGSTER_HOME"])
    parent = os.getppid()
    target = ModuleTarget(
        module_name="rt_assets.definitions", attribute="defs", working_directory=None, location_name=CODE_LOCATION
    )
    try:
        with DagsterInstance.get() as instance:
            with daemon_controller_from_instance(
                instance,
                workspace_load_target=target,
                gen_daemons=_daemons,
                heartbeat_interval_seconds=HEARTBEAT_INTERVAL_S,
                log_level="warning",
                code_server_log_level="warning",
            ) as controller:
                write_json_atomic(
                    home / STATE_FILE,
                    {"pid": os.getpid(), "daemon_id": controller._daemon_uuid, "started": time.time()},
                )
                watchdog = threading.Thread(
                    target=_exit_when_orphaned_and_idle, args=(instance, parent), daemon=True, name="rt-orphan-check"
                )
                watchdog.start()
                controller.check_daemon_loop()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
