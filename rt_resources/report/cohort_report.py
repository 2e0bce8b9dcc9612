"""One self-contained HTML page about a processed cohort (``rtpipeline report``).

The page needs no server, no network and no JavaScript: CSS in a ``<style>`` block, figures as
inline SVG (:mod:`rt_resources.report.figures`), every string from the data HTML-escaped. Courses
appear by course key only; ``cohort/courses.parquet`` (the key map) is never read, and files of the
drop by file id (:mod:`rt_resources.report.sections`). Each section is an element with its ``id``
and ``data-filled="true|false"`` (false: it says why it has nothing to show).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rt_resources.fileio import write_atomic
from rt_resources.report.html_parts import Section, esc
from rt_resources.report.inputs import CohortTables, read_cohort
from rt_resources.report.sections import build_sections

REPORT_NAME = "report.html"

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0; color: #222;
       background: #fafafa; line-height: 1.45; }
header, main { max-width: 1280px; margin: 0 auto; padding: 0 24px; }
header { padding-top: 20px; padding-bottom: 8px; border-bottom: 1px solid #ddd; }
h1 { font-size: 1.6em; margin: 0 0 6px; }
h2 { font-size: 1.25em; margin: 0 0 10px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 2px 14px; margin: 8px 0; }
dl.meta dt { color: #666; } dl.meta dd { margin: 0; font-family: ui-monospace, monospace; }
nav a { margin-right: 14px; } nav a.empty { color: #999; }
section { background: #fff; border: 1px solid #e2e2e2; border-radius: 6px; padding: 16px 20px; margin: 20px 0; }
section[data-filled="false"] { border-left: 4px solid #bbb; }
table { border-collapse: collapse; margin: 10px 0; font-size: 0.9em; }
th, td { border-bottom: 1px solid #e6e6e6; padding: 3px 10px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; } td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.error td { background: #fdecea; } tr.warn td { background: #fff6db; } tr.no-qc td { color: #888; }
p.empty { color: #555; font-style: italic; } p.note { color: #555; font-size: 0.9em; }
figure.plot { margin: 12px 0; } figure.plot svg { max-width: 100%; height: auto; display: block; }
figcaption { color: #555; font-size: 0.9em; }
"""


@dataclass(frozen=True)
class ReportSummary:
    """What :func:`write_report` wrote."""

    path: Path
    sections: dict[str, bool]  #: section id -> filled
    n_courses: int
    why_empty: dict[str, str] = field(default_factory=dict)  #: section id -> why it shows nothing


def rtpipeline_version() -> str:
    """The installed rtpipeline's version ("unknown" from a source tree without install)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rtpipeline")
    except PackageNotFoundError:  # pragma: no cover - run from a source tree without install
        return "unknown"


def page(sections: list[Section], *, outdir: Path, n_courses: int, generated_at: datetime, version: str) -> str:
    """The HTML page of ``sections`` under a header (generation time, data root, courses, version)."""
    nav = " ".join(f'<a href="#{esc(s.id)}"{"" if s.filled else " class=empty"}>{esc(s.title)}</a>' for s in sections)
    meta = {
        "generated": generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "data root": outdir.name,  # its name only: the page is for sharing, the folders above may name people
        "courses": str(n_courses),
        "rtpipeline": version,
    }
    header = (
        "<header><h1>rtpipeline cohort report</h1>"
        + '<dl class="meta">'
        + "".join(f"<dt>{esc(k)}</dt><dd>{esc(v)}</dd>" for k, v in meta.items())
        + f"</dl><nav>{nav}</nav></header>"
    )
    body = "".join(
        f'<section id="{esc(s.id)}" data-filled="{"true" if s.filled else "false"}">'
        f"<h2>{esc(s.title)}</h2>{s.body}</section>"
        for s in sections
    )
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>rtpipeline cohort report: {n_courses} courses</title><style>{CSS}</style></head>"
        f"<body>{header}<main>{body}</main></body></html>\n"
    )


def render_sections(
    tables: CohortTables, *, outdir: Path, generated_at: datetime | None = None, version: str | None = None
) -> tuple[list[Section], str]:
    """The sections of ``tables`` and their page (pure: nothing is read or written)."""
    sections = build_sections(tables)
    text = page(
        sections,
        outdir=Path(outdir),
        n_courses=len(tables.course_keys),
        generated_at=generated_at or datetime.now(UTC),
        version=version or rtpipeline_version(),
    )
    return sections, text


def render(
    tables: CohortTables, *, outdir: Path, generated_at: datetime | None = None, version: str | None = None
) -> str:
    """The report page of ``tables`` (pure: nothing is read or written)."""
    return render_sections(tables, outdir=outdir, generated_at=generated_at, version=version)[1]


def write_report(outdir: Path, to: Path | None = None) -> ReportSummary:
    """Write the cohort report of the data root ``outdir`` to ``to`` (default
    ``outdir/cohort/report.html``), atomically; nothing else under ``outdir`` is written.

    Raises :class:`rt_resources.report.inputs.ReportError` when ``outdir/cohort`` holds no cohort table.
    """
    outdir = Path(outdir).resolve()
    target = Path(to) if to is not None else outdir / "cohort" / REPORT_NAME
    tables = read_cohort(outdir)
    sections, text = render_sections(tables, outdir=outdir)
    write_atomic(target, lambda tmp: tmp.write_text(text, encoding="utf-8"))
    return ReportSummary(
        path=target.resolve(),
        sections={s.id: s.filled for s in sections},
        n_courses=len(tables.course_keys),
        why_empty={s.id: s.why_empty for s in sections if not s.filled},
    )
