"""Tables as the book shows them: numbers to a few significant digits, no index, no NaN, and a slim view on a
narrow screen (each row as a small card of its own), so no column is cut off on a phone."""

from __future__ import annotations

import html
import numbers
import re

import pandas as pd

from ..study.tables import count, significant

#: Below this page width (CSS pixels) a table shows as one card per row.
NARROW_PX = 640
#: A column whose longest cell is longer than this (characters) is prose: it wraps instead of widening the table.
PROSE_CHARS = 40
#: Columns whose names end so (singular) hold identifiers (a slot's index, an item's number): printed as they are;
#: plural names ("slots", "steps") are counts.
ID_SUFFIXES = ("slot", "row", "item", "index", "fact", "seed", "step")
_ID = ' class="smf-id"'

_STYLE = (f"<style>.smf-table .smf-narrow{{display:none}}"
          f"@media (max-width:{NARROW_PX}px){{.smf-table .smf-wide{{display:none}}"
          ".smf-table .smf-narrow{display:block}}"
          ".smf-table .smf-wide{overflow-x:auto}"
          ".smf-table table{border-collapse:collapse;font-size:0.9em;margin:0.4em 0}"
          ".smf-table th,.smf-table td{padding:0.2em 0.45em;text-align:right;vertical-align:top}"
          ".smf-table .smf-wide td,.smf-table .smf-wide th{white-space:nowrap}"
          ".smf-table .smf-wide td.smf-text{white-space:normal;min-width:12em;max-width:26em;text-align:left}"
          ".smf-table .smf-ci{color:#555;font-size:0.92em}.smf-table td.smf-key{text-align:left}"
          ".smf-table th{text-align:left}.smf-table .smf-card{margin:0 0 0.6em 0}"
          ".smf-table .smf-card th{font-weight:600;padding-right:1em}</style>")


def is_id_column(name) -> bool:
    """Whether a column holds identifiers rather than counts (its name ends in one of ``ID_SUFFIXES``)."""
    return str(name).lower().endswith(ID_SUFFIXES)


def cell_text(value, digits: int = 3, identifier: bool = False) -> str:
    """One cell: counts with thousands separators (identifiers as they are), other numbers to ``digits``
    significant digits (scientific notation below 0.001), text as it is, a missing value as an em dash."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, numbers.Integral):
        return str(int(value)) if identifier else count(value)
    if isinstance(value, numbers.Real):
        return significant(float(value), digits)
    return str(value)


_INTERVAL = re.compile(r"^([+-]?[0-9.eE+-]+) \[([+-]?[0-9.eE+-]+), ([+-]?[0-9.eE+-]+)\]$")


def _short(x: str, tiny: bool) -> str:
    if not tiny:
        return x
    mantissa, _, exponent = f"{float(x):+.1e}".partition("e")
    return f"{mantissa}e{int(exponent)}"


def cell_html(text: str) -> str:
    """A formatted cell as HTML: an interval ``"d [lo, hi]"`` on two lines (the estimate, then its interval; in
    scientific notation when every number is below 0.001), anything else escaped as it is."""
    m = _INTERVAL.match(text)
    if not m:
        return html.escape(text)
    try:
        tiny = max(abs(float(v)) for v in m.groups()) < 1e-3 and any(float(v) for v in m.groups())
    except ValueError:
        return html.escape(text)
    d, lo, hi = (_short(v, tiny) for v in m.groups())
    return f'{html.escape(d)}<br><span class="smf-ci">[{html.escape(lo)}, {html.escape(hi)}]</span>'


class BookTable:
    """A DataFrame shown as the book shows tables (see the module); displays as HTML in Jupyter, Colab and the
    book. ``key`` names the columns that identify a row (shown as each card's title on a narrow screen). A column of
    prose (a cell longer than ``PROSE_CHARS``) wraps, so the table keeps to the page's width."""

    def __init__(self, df: pd.DataFrame, digits: int = 3, key: list[str] | None = None, caption: str | None = None):
        self.df = df.reset_index() if _named_index(df) else df.reset_index(drop=True)
        self.digits = digits
        self.key = [k for k in (key or list(self.df.columns[:1])) if k in self.df.columns]
        self.caption = caption

    def cells(self) -> list[list[str]]:
        ids = [is_id_column(c) for c in self.df.columns]
        return [[cell_text(v, self.digits, i) for v, i in zip(row, ids)] for row in self.df.itertuples(index=False)]

    def _wide(self, rows) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in self.df.columns)
        prose = [max((len(r[j]) for r in rows), default=0) > PROSE_CHARS for j in range(len(self.df.columns))]
        classes = [" ".join(n for n, on in (("smf-key", c in self.key), ("smf-text", p), ("smf-id", is_id_column(c)))
                            if on) for c, p in zip(self.df.columns, prose)]
        body = "".join("<tr>" + "".join(f'<td class="{k}">{cell_html(v)}</td>' if k else f"<td>{cell_html(v)}</td>"
                                        for k, v in zip(classes, r)) + "</tr>" for r in rows)
        cap = f"<caption>{html.escape(self.caption)}</caption>" if self.caption else ""
        return (f'<div class="smf-wide"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
                "</table></div>")

    def _narrow(self, rows) -> str:
        cols = list(self.df.columns)
        cards = []
        for r in rows:
            title = ", ".join(f"{k} {r[cols.index(k)]}" if k in ("seed", "lr") else r[cols.index(k)]
                              for k in self.key if r[cols.index(k)] not in ("", "—"))
            body = "".join(f"<tr><th>{html.escape(str(c))}</th><td{_ID if is_id_column(c) else ''}>"
                           f"{cell_html(v)}</td></tr>" for c, v in zip(cols, r) if c not in self.key)
            ids = _ID if all(is_id_column(k) for k in self.key) else ""
            cards.append(f'<table class="smf-card"><caption{ids}>{html.escape(title)}</caption>'
                         f'<tbody>{body}</tbody></table>')
        return f'<div class="smf-narrow">{"".join(cards)}</div>'

    def _repr_html_(self) -> str:
        rows = self.cells()
        return f'<div class="smf-table">{_STYLE}{self._wide(rows)}{self._narrow(rows)}</div>'

    def __repr__(self) -> str:
        return self.df.to_string(index=False)


def _named_index(df: pd.DataFrame) -> bool:
    return any(name is not None for name in df.index.names)


def book_table(df: pd.DataFrame, digits: int = 3, key: list[str] | None = None,
               caption: str | None = None) -> BookTable:
    """``df`` as the book shows tables: :class:`BookTable`. A named index (``set_index([...])``) becomes columns;
    an unnamed one (0, 1, 2, ...) is dropped."""
    return BookTable(df, digits, key, caption)
