"""Imported once by the step executor's forkserver; every step process is forked from it.

It imports the code location and what a step process needs to open the Dagster instance
(SQLAlchemy, Alembic, the storage classes): about 2.5 s + 0.8 s on this project's 2-core machine
that each step would otherwise pay again. The instance opened here to pull in those imports is
disposed before any fork (SQLite connections are never shared with a child).
"""

import os

import rt_assets.definitions  # noqa: F401  (Dagster, pandas, pydicom, SimpleITK, the asset modules)

if os.environ.get("DAGSTER_HOME"):
    from dagster import DagsterInstance

    with DagsterInstance.get() as _instance:
        _instance.get_runs(limit=1)
