"""Check, before anything is submitted, that the services a run depends on answer: the instance's
storage (Postgres when configured) and, with ``step_executor: celery``, the Celery broker. A
service that is down gives one clear line naming its address, within seconds, never a hang."""

from __future__ import annotations

import re

from rt_resources.settings import Settings


class ServiceDown(RuntimeError):
    """A service the run needs does not answer (the message names it and its address)."""


def redact(url: str) -> str:
    """``url`` without its password (``scheme://user:***@host``)."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", url)


def root_cause(exc: BaseException) -> str:
    """The first line of the innermost cause of ``exc`` (a driver's message names host and port)."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def open_checked(home):
    """The instance of ``home`` (:func:`rt_assets.headless.instance.open_instance`), or
    :class:`ServiceDown` naming the storage that does not answer."""
    from rt_assets.headless.instance import open_instance

    try:
        return open_instance(home)
    except Exception as exc:
        raise ServiceDown(
            f"the Dagster instance of {home} cannot be opened (its dagster.yaml storage does not answer): "
            f"{root_cause(exc)}"
        ) from exc


def check_instance(instance) -> None:
    """The instance's run storage answers a query (Postgres: the server is up and the database exists)."""
    try:
        instance.get_runs(limit=1)
    except Exception as exc:
        where = getattr(getattr(instance, "_run_storage", None), "postgres_url", "") or ""
        raise ServiceDown(
            f"the Dagster instance's storage does not answer{f' at {redact(where)}' if where else ''}: "
            f"{root_cause(exc)}"
        ) from exc


def check_broker(settings: Settings, timeout_s: float = 5.0) -> None:
    """The Celery broker accepts a connection (only with ``step_executor: celery``)."""
    if settings.step_executor != "celery":
        return
    from kombu import Connection

    url = settings.celery.broker
    try:
        with Connection(
            url, connect_timeout=timeout_s, transport_options={"socket_connect_timeout": timeout_s}
        ) as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=timeout_s)
    except Exception as exc:
        raise ServiceDown(
            f"the Celery broker {redact(url)} does not answer ({type(exc).__name__}: {exc}); start Redis there, "
            "or set RT_CELERY_BROKER / celery.broker to where it runs"
        ) from exc


def preflight(instance, settings: Settings) -> None:
    check_instance(instance)
    check_broker(settings)
