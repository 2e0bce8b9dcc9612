"""HTML building blocks of the report; every string from the data passes :func:`esc` here."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real

import numpy as np


@dataclass(frozen=True)
class Section:
    """One section of the page. ``filled``: it shows a finding from the cohort's data; when not,
    ``why_empty`` says why (the input is absent, unreadable, lacks columns, or holds too little)."""

    id: str
    title: str
    body: str  #: HTML
    filled: bool
    why_empty: str = ""


def esc(value: object) -> str:
    """Text for HTML content and attribute values."""
    return html.escape(str(value), quote=True)


def fmt(value: object, digits: int = 2) -> str:
    """A cell's text: numbers with ``digits`` decimals (integers as they are), missing as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool | np.bool_):
        return "yes" if value else "no"
    if isinstance(value, Integral):
        return str(int(value))
    if isinstance(value, Real):
        number = float(value)
        return "–" if math.isnan(number) else f"{number:.{digits}f}"
    return str(value)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and the noun, singular or plural: "1 course", "3 courses"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def para(text: str, cls: str = "") -> str:
    """A paragraph of plain text (escaped)."""
    attr = f' class="{esc(cls)}"' if cls else ""
    return f"<p{attr}>{esc(text)}</p>"


def empty_note(text: str) -> str:
    """The sentence a section shows instead of its data."""
    return para(text, "empty")


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    numeric: Sequence[int] = (),
    row_classes: Sequence[str] | None = None,
) -> str:
    """A table; cells of the ``numeric`` column indices are right-aligned, every cell formatted by
    :func:`fmt`; ``row_classes`` (one per row) become each row's CSS class."""
    right = set(numeric)
    classes = list(row_classes) if row_classes is not None else [""] * len(rows)
    head = "".join(f"<th{' class=num' if i in right else ''}>{esc(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        (f'<tr class="{esc(cls)}">' if cls else "<tr>")
        + "".join(f"<td{' class=num' if i in right else ''}>{esc(fmt(cell))}</td>" for i, cell in enumerate(row))
        + "</tr>"
        for row, cls in zip(rows, classes, strict=True)
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def figure(svg: str, caption: str) -> str:
    """An inline SVG (already safe: made by :mod:`rt_resources.report.figures`) with its caption."""
    return f'<figure class="plot">{svg}<figcaption>{esc(caption)}</figcaption></figure>'


def more_rows(shown: int, total: int, what: str) -> str:
    """ "N more ... not shown" under a capped table (empty when nothing was left out)."""
    return para(f"{total - shown} more {what} not shown (of {total}).", "note") if total > shown else ""
