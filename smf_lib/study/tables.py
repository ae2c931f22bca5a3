"""How the project prints numbers, in one place: counts with thousands separators (:func:`count`), measurements to
a few significant digits (:func:`significant`), seeds, rates, intervals rounded to what their width supports, and
DataFrames as Markdown. The book's tables (:mod:`smf_lib.views.tables`) and the study's tables read these."""

from __future__ import annotations

import math
import re


def _missing(x) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def seed_label(seed):
    """A seed as the tables show it: an integer (a CSV round trip makes it a float), ``""`` for none."""
    return int(seed) if isinstance(seed, (int, float)) and not _missing(seed) else ""


def rate_label(lr) -> str:
    """A learning rate as the tables show it (``5e-05``, ``0.0002``; ``""`` for none)."""
    return f"{lr:g}" if isinstance(lr, (int, float)) and not _missing(lr) else ""


def interval_digits(lo: float, hi: float) -> int:
    """Decimals that an interval of this width supports (two significant digits of its width)."""
    width = abs(hi - lo)
    return 0 if not width or not math.isfinite(width) else max(0, 1 - int(math.floor(math.log10(width))))


def interval_cell(d: float, lo: float, hi: float, digits: int | None = None) -> str:
    """``"+Δ [+lo, +hi]"``, rounded to ``digits`` decimals or (default) to what the interval's width supports."""
    k = interval_digits(lo, hi) if digits is None else digits
    return f"{d:+.{k}f} [{lo:+.{k}f}, {hi:+.{k}f}]"


def spoken_list(items) -> str:
    """Items as prose lists them: ``a``, ``a and b``, ``a, b and c``."""
    items = list(items)
    return ", ".join(items[:-1]) + " and " + items[-1] if len(items) > 1 else "".join(items)


def verdict_cell(row, digits: int = 3, unit: str = "") -> str:
    """A verdict row's difference and interval (``difference``, ``lo``, ``hi``, ``verdict``), as a sentence cites
    it. Where the interval over items excludes 0 but the verdict is "cannot tell", the seeds pointed different ways,
    and the cell says so, lest a reader take the interval for the verdict."""
    split = row["verdict"] == "cannot tell" and (row["lo"] > 0 or row["hi"] < 0)
    return (interval_cell(row["difference"], row["lo"], row["hi"], digits) + (f" {unit}" if unit else "")
            + ("; the seeds disagree" if split else ""))


def count(n) -> str:
    """A count with thousands separators (``4,096``; ``""`` for none). Identifiers (a slot's index, an item's
    number) are not counts: print them as they are."""
    return "" if _missing(n) else f"{int(n):,}"


_INTERVAL = re.compile(r" \[[+-]?[0-9.]+(?:e[+-]?[0-9]+)?, [+-]?[0-9.]+(?:e[+-]?[0-9]+)?\]")


def without_intervals(sentence: str) -> str:
    """A finding without its bracketed 95% intervals (``"+0.10 [+0.05, +0.15] nats"`` -> ``"+0.10 nats"``), for a
    short answer box; the intervals go to the table under it."""
    return _INTERVAL.sub("", sentence)


def with_separators(text: str) -> str:
    """``text`` with thousands separators on its bare whole numbers of 4 or more digits (a recorded description,
    ``"4096 slots"`` -> ``"4,096 slots"``); decimals, versions and names are left as they are."""
    return re.sub(r"(?<![\w.,:/-])\d{4,}(?![\w,]|\.\d)", lambda m: count(m.group(0)), text)


def significant(x, digits: int = 3) -> str:
    """A number to ``digits`` significant digits: plain notation between 0.001 and 10^6, scientific outside it
    (``2.1e-05``); ``""`` for a missing value."""
    if _missing(x):
        return ""
    if x == 0 or (1e-3 <= abs(x) < 1e6):
        return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"
    return f"{x:.{digits - 1}e}"


def markdown_table(df) -> str:
    """A DataFrame as a Markdown table (no extra dependency); its index is not shown."""
    rows = [list(df.columns)] + [[str(v).replace("|", "\\|") for v in r] for r in df.itertuples(index=False)]
    lines = ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join([lines[0], "|" + "---|" * len(df.columns), *lines[1:]])
