"""Every word a course asset sends to Dagster passes the course's scrubber.

``@private`` wraps a course asset's body (under ``@asset``). For the length of the step it sets
the course's :class:`~rt_resources.privacy.Scrubber` (built from the course's manifest, the drop
index's PatientIDs and names of its files, and the site secret), and on the way out:

* the metadata, descriptions and check results of what the asset returns or yields are scrubbed;
* a ``Failure`` keeps its meaning but its description and metadata are scrubbed, and it is raised
  without the original exception chained (Dagster would store that message too);
* any other exception becomes such a ``Failure``: type and scrubbed message, with the full
  traceback written to ``<data_root>/logs/errors/`` (local, for whoever may read the data).

Helpers that log or build check results (:func:`scrub`, :func:`log_warning`) use the step's
scrubber, and so do the engines' own loggers (``rtpipeline.*``: pool retries, halving), which
dagster.yaml's ``python_logs`` sends to the run's event log: their records are scrubbed as they are
made (:func:`install_engine_log_scrubbing`). Dagster's compute-log capture is off (dagster.yaml):
what libraries print (a DICOM reader naming a file) never reaches the instance's storage.
"""

from __future__ import annotations

import functools
import inspect
import logging
import traceback
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetObservation,
    Failure,
    JsonMetadataValue,
    MarkdownMetadataValue,
    MaterializeResult,
    MetadataValue,
    Output,
    PathMetadataValue,
    TextMetadataValue,
)

from rt_resources.ingest.course_keys import load_site_secret
from rt_resources.ingest.manifest import Manifest
from rt_resources.privacy import Scrubber, identifiers_from_headers

ERRORS_DIR = "logs/errors"  #: under the data root: full tracebacks of failed steps (local only)

_current: ContextVar[Scrubber | None] = ContextVar("rt_scrubber", default=None)


def current() -> Scrubber | None:
    return _current.get()


def scrub(text: str) -> str:
    """``text`` through the step's scrubber (unchanged outside a ``@private`` step)."""
    scrubber = _current.get()
    return scrubber.text(text) if scrubber is not None and isinstance(text, str) else text


def scrub_value(value):
    """Every string in ``value`` (dicts, lists) through the step's scrubber."""
    scrubber = _current.get()
    return scrubber.value(value) if scrubber is not None else value


def log_warning(context, message: str) -> None:
    context.log.warning(scrub(message))


ENGINE_LOGGER = "rtpipeline"  #: the engines' loggers (rt_resources.parallel, radiomics): dagster.yaml python_logs


def install_engine_log_scrubbing() -> None:
    """Scrub every record of the ``rtpipeline`` loggers made inside a ``@private`` step, before
    any handler (Dagster's event log among them) sees it. Done once per process, on import."""
    base = logging.getLogRecordFactory()
    if getattr(base, "rt_scrubbing", False):
        return

    def factory(*args, **kwargs) -> logging.LogRecord:
        record = base(*args, **kwargs)
        scrubber = _current.get()
        name = record.name or ""
        if scrubber is not None and (name == ENGINE_LOGGER or name.startswith(ENGINE_LOGGER + ".")):
            try:
                message = record.getMessage()
            except (TypeError, ValueError):
                message = str(record.msg)
            record.msg, record.args = scrubber.text(message), ()
        return record

    factory.rt_scrubbing = True
    logging.setLogRecordFactory(factory)


install_engine_log_scrubbing()


def scrubber_for_course(data_root, course_key: str, manifest: Manifest | None = None) -> Scrubber:
    """The course's scrubber: its files (from the manifest) and the identifiers the drop index
    recorded for them."""
    from rt_resources.ingest.index import DropIndex
    from rt_resources.ingest.manifest import ManifestError

    root = data_root.root
    if manifest is None:
        try:
            manifest = data_root.read_manifest(course_key)
        except (ManifestError, ValueError, OSError):
            manifest = None
    if manifest is None:
        return Scrubber(load_site_secret(root))
    rel_paths = [f.path for f in manifest.files]
    identifiers = DropIndex(data_root.state(), manifest.drop_root).identifiers(rel_paths)
    if rel_paths and not identifiers:  # this machine's index does not know the course: read the headers
        identifiers = identifiers_from_headers(manifest.drop_root, rel_paths)
    return Scrubber(load_site_secret(root), manifest.drop_root, rel_paths, identifiers)


def use_scrubber(scrubber: Scrubber) -> None:
    """Replace the step's scrubber (course_manifest, once it knows the course's files)."""
    _current.set(scrubber)


def _metadata(scrubber: Scrubber, metadata) -> dict:
    out = {}
    for key, value in (metadata or {}).items():
        if isinstance(value, MarkdownMetadataValue):
            value = MetadataValue.md(scrubber.text(value.value))
        elif isinstance(value, JsonMetadataValue):
            value = MetadataValue.json(scrubber.value(value.value))
        elif isinstance(value, TextMetadataValue):
            value = MetadataValue.text(scrubber.text(value.value))
        elif isinstance(value, PathMetadataValue):
            value = MetadataValue.path(scrubber.text(str(value.value)))
        elif not isinstance(value, MetadataValue):
            value = scrubber.value(value)
        out[key] = value
    return out


def scrub_event(scrubber: Scrubber, event: Any) -> Any:
    """A MaterializeResult, AssetCheckResult, AssetObservation or Output with its words scrubbed."""
    if isinstance(event, MaterializeResult):
        return event._replace(
            metadata=_metadata(scrubber, event.metadata),
            check_results=[scrub_event(scrubber, c) for c in event.check_results or []],
        )
    if isinstance(event, AssetCheckResult | AssetObservation):
        description = scrubber.text(event.description) if event.description else event.description
        return event._replace(metadata=_metadata(scrubber, event.metadata), description=description)
    if isinstance(event, Output):
        return event.with_metadata(_metadata(scrubber, event.metadata))
    return event


def _error_log(context, data_root, text: str, label: str) -> str:
    """Write ``text`` to ``<data root>/logs/errors/`` (local, for whoever may read the data root);
    returns the note naming it, or "" when it cannot be written."""
    try:
        folder = data_root.root / ERRORS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{context.run_id[:8]}-{context.asset_key.to_user_string()}-{context.partition_key}.log"
        (folder / name).write_text(text)
        return f" ({label}: <data root>/{ERRORS_DIR}/{name})"
    except Exception:  # logging the error must never hide it
        return ""


def _failure(context, data_root, scrubber: Scrubber, exc: BaseException) -> Failure:
    if isinstance(exc, Failure):
        description = exc.description or ""
        shown = scrubber.text(description)
        if shown != description:  # what was scrubbed (a path under the drop) stays readable locally
            shown += _error_log(context, data_root, description + "\n", "unscrubbed")
        return Failure(description=shown, metadata=_metadata(scrubber, exc.metadata), allow_retries=exc.allow_retries)
    where = _error_log(context, data_root, "".join(traceback.format_exception(exc)), "traceback")
    return Failure(description=scrubber.text(f"course {context.partition_key}: {type(exc).__name__}: {exc}") + where)


def private(fn: Callable) -> Callable:
    """Run a course asset's body under its course's scrubber (see the module docstring)."""

    def setup(args, kwargs):
        context = args[0] if args else kwargs["context"]
        data_root = kwargs.get("data_root")
        scrubber = scrubber_for_course(data_root, context.partition_key) if data_root is not None else None
        return context, data_root, scrubber or Scrubber(b"")

    if inspect.isgeneratorfunction(fn):

        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            context, data_root, scrubber = setup(args, kwargs)
            token = _current.set(scrubber)
            try:
                for event in fn(*args, **kwargs):
                    yield scrub_event(_current.get(), event)
            except Exception as exc:
                raise _failure(context, data_root, _current.get(), exc) from None
            finally:
                _current.reset(token)

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        context, data_root, scrubber = setup(args, kwargs)
        token = _current.set(scrubber)
        try:
            return scrub_event(_current.get(), fn(*args, **kwargs))
        except Exception as exc:
            raise _failure(context, data_root, _current.get(), exc) from None
        finally:
            _current.reset(token)

    return wrapper
