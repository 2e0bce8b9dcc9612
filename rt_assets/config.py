"""The settings this code location is built with.

The webserver, the daemon's code server and every run worker import :mod:`rt_assets.definitions`,
which asks :func:`current_settings`: the settings file and environment, read once per process
(:func:`rt_resources.settings.load_settings`). ``rtpipeline run`` loads the definitions in its own
process with the settings of its command line (:func:`use_settings`), and gives the runs it
submits the same settings as run config, so a run never depends on the environment of whichever
process launches it.
"""

from __future__ import annotations

from rt_resources.settings import Settings, load_settings

_settings: Settings | None = None


def current_settings() -> Settings:
    """The settings of this process's code location (loaded on first use)."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def use_settings(settings: Settings | None) -> None:
    """Build this process's code location with ``settings`` (None: read them again on next use).
    Call before :mod:`rt_assets.definitions` is imported, or reload it afterwards."""
    global _settings
    _settings = settings
