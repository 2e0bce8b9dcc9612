"""Regression: processes opening a new instance folder at once (the CLI creating it while a test,
a UI or a script opens it) stamped SQLite schema versions twice ("alembic_version has more than
one head present") and broke the instance for good; seen in CI in two CLI tests at once, and
4 times in 6 with four processes opening one folder without the lock."""

import shutil
import subprocess
import sys

from rt_assets.headless.instance import PROJECT_DAGSTER_YAML

OPEN = "import sys; from rt_assets.headless.instance import open_instance; open_instance(sys.argv[1]).dispose()"


def test_processes_opening_a_new_instance_at_once_leave_it_usable(tmp_path):
    for trial in range(3):
        home = tmp_path / f"home{trial}"
        home.mkdir()
        shutil.copy(PROJECT_DAGSTER_YAML, home / "dagster.yaml")
        procs = [
            subprocess.Popen([sys.executable, "-c", OPEN, str(home)], stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert all(p.returncode == 0 for p in procs), errors
        again = subprocess.run([sys.executable, "-c", OPEN, str(home)], capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr[-2000:]
