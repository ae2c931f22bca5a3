"""Readable figures: the book's type sizes, the checks a figure must pass (its smallest text, a legend that covers
no data) and PNGs that carry both measurements, so ``scripts/check_book.py`` can judge each figure as rendered.

A figure's text, rendered in a browser, measures ``size_pt * dpi / 96 * shown_px / png_px`` points, where ``dpi``
is the PNG's pixels per inch and ``shown_px / png_px`` the browser's scaling; every PNG the book shows records
``smf:min_font_pt``, ``smf:dpi`` and ``smf:legend_overlaps`` in its text chunks (:func:`measurements`).
"""

from __future__ import annotations

import io
import zlib

#: The smallest type, in points as rendered, that a figure in the book may use at a 1280 px wide page.
MIN_RENDERED_PT = 9.0
#: The narrowest a figure may be shown at a 1280 px wide page, in CSS pixels.
MIN_SHOWN_PX = 600
#: Pixels per inch at which the book shows a figure (its CSS width is the figure's width in inches times this).
SHOWN_PX_PER_INCH = 100
#: The width of the book's text column at a 1280 px wide page, in CSS pixels (figures are never shown wider).
COLUMN_PX = 688


def display_width(png_px: float, dpi: int) -> int:
    """The CSS width the book asks for a PNG ``png_px`` pixels wide drawn at ``dpi`` (the page caps it at 100%)."""
    return round(max(MIN_SHOWN_PX, png_px * SHOWN_PX_PER_INCH / dpi))


def shown_width(png_px: int, dpi: int, column_px: int = COLUMN_PX) -> float:
    """The CSS width at which the book shows a PNG ``png_px`` pixels wide drawn at ``dpi``."""
    return min(column_px, display_width(png_px, dpi))


def figure_problems(fig, dpi: int = 150, column_px: int = COLUMN_PX) -> list[str]:
    """What ``scripts/check_book.py`` would refuse in this figure, shown in a column ``column_px`` wide: text
    below ``MIN_RENDERED_PT`` as rendered, or a legend over data. Empty when the figure is readable."""
    png = figure_png(fig, dpi)
    meta, width = png_text(png), int.from_bytes(png[16:20], "big")
    problems = []
    pt = rendered_pt(meta, shown_width(width, dpi, column_px), width)
    if pt is not None and pt < MIN_RENDERED_PT - 0.05:
        problems.append(f"smallest text {pt:.1f} pt as rendered (drawn at {meta['smf:min_font_pt']} pt in a "
                        f"{width / dpi:.1f} in wide figure), below {MIN_RENDERED_PT:g} pt")
    if int(meta["smf:legend_overlaps"]):
        problems.append(f"a legend covers {meta['smf:legend_overlaps']} data point(s)")
    return problems


def book_style() -> None:
    """The book's type sizes: 11 pt text, 10 pt ticks and legends (readable at ``SHOWN_PX_PER_INCH``)."""
    import matplotlib as mpl

    mpl.rcParams.update({"font.size": 11, "axes.titlesize": 11.5, "axes.labelsize": 11, "xtick.labelsize": 10,
                         "ytick.labelsize": 10, "legend.fontsize": 10, "legend.title_fontsize": 10,
                         "figure.titlesize": 12})


def _texts(fig):
    from matplotlib.text import Text

    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip() and t.figure is fig]


def smallest_text_pt(fig) -> float | None:
    """The smallest font size (points, as drawn) of the figure's visible, non-empty text; None without text."""
    sizes = [t.get_fontsize() for t in _texts(fig)]
    return min(sizes) if sizes else None


def _data_points(ax):
    """Display coordinates of the data an axes draws: line vertices, scatter offsets, segments and patches."""
    import numpy as np
    from matplotlib.collections import Collection
    from matplotlib.patches import Rectangle

    def along(xy):  # points along a polyline, so a segment that passes under a legend counts too
        xy = np.asarray(xy, dtype=float)
        if len(xy) < 2:
            return xy
        t = np.linspace(0, 1, 24)[:, None, None]
        return (xy[:-1] * (1 - t) + xy[1:] * t).reshape(-1, 2)

    pts = []
    for line in ax.lines:
        if line.get_visible() and len(line.get_xydata()):
            xy = line.get_transform().transform(line.get_xydata())
            pts.append(along(xy) if line.get_linestyle() not in ("None", "none", "", " ") else xy)
    for coll in ax.collections:
        if not isinstance(coll, Collection) or not coll.get_visible():
            continue
        offsets = coll.get_offsets()
        if len(offsets) > 1 or (len(offsets) == 1 and np.any(np.asarray(offsets) != 0)):
            pts.append(coll.get_offset_transform().transform(offsets))  # markers: their paths are marker shapes
            continue
        for path in coll.get_paths()[:5000]:
            if len(path.vertices) and len(path.vertices) < 10000:
                pts.append(along(coll.get_transform().transform(path.vertices)))
    for patch in ax.patches:
        if isinstance(patch, Rectangle) and patch.get_visible() and patch.get_width() and patch.get_height():
            pts.append(patch.get_transform().transform(np.asarray(patch.get_path().vertices)))
    pts = [p for p in pts if len(p)]
    if not pts:
        return np.zeros((0, 2))
    pts = np.concatenate(pts)
    return pts[np.isfinite(pts).all(axis=1)]


def legend_overlaps(fig) -> int:
    """How many data points (line vertices, markers, bar corners) of the figure's axes lie under a legend box.
    Zero when every legend sits outside the data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legends = [(ax.get_legend(), [ax]) for ax in fig.axes if ax.get_legend() is not None]
    legends += [(leg, fig.axes) for leg in fig.legends]
    count = 0
    for leg, axes in legends:
        if not leg.get_visible():
            continue
        box = leg.get_window_extent(renderer)
        for ax in axes:
            pts = _data_points(ax)
            inside = ((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1))
            count += int(inside.sum())
    return count


def measurements(fig, dpi: int) -> dict[str, str]:
    """A figure's measurements as PNG text: ``smf:min_font_pt`` (its smallest text as drawn), ``smf:dpi`` (pixels
    per inch of the PNG) and ``smf:legend_overlaps`` (data points under a legend)."""
    smallest = smallest_text_pt(fig)
    return {"smf:min_font_pt": "" if smallest is None else f"{smallest:g}", "smf:dpi": str(dpi),
            "smf:legend_overlaps": str(legend_overlaps(fig))}


def figure_png(fig, dpi: int = 150) -> bytes:
    """The figure as PNG (tight bounding box) with its :func:`measurements` in text chunks."""
    meta = measurements(fig, dpi)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return add_png_text(buf.getvalue(), meta)


def add_png_text(png: bytes, meta: dict[str, str]) -> bytes:
    """``png`` with ``tEXt`` chunks for ``meta`` inserted after its header chunk."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return len(body).to_bytes(4, "big") + kind + body + zlib.crc32(kind + body).to_bytes(4, "big")

    head_end = 8 + 4 + 4 + 13 + 4  # signature, then the IHDR chunk (length, type, 13 bytes, CRC)
    extra = b"".join(chunk(b"tEXt", k.encode("latin-1") + b"\0" + v.encode("latin-1")) for k, v in meta.items())
    return png[:head_end] + extra + png[head_end:]


def png_text(png: bytes) -> dict[str, str]:
    """The ``tEXt`` chunks of a PNG, as a dict."""
    if png[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    out, pos = {}, 8
    while pos + 8 <= len(png):
        n, kind = int.from_bytes(png[pos:pos + 4], "big"), png[pos + 4:pos + 8]
        if kind == b"tEXt":
            key, _, value = png[pos + 8:pos + 8 + n].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        if kind == b"IEND":
            break
        pos += 12 + n
    return out


def rendered_pt(meta: dict[str, str], shown_px: float, png_px: float) -> float | None:
    """The smallest text of a figure, in points as a browser shows it at ``shown_px`` CSS pixels wide."""
    if not meta.get("smf:min_font_pt"):
        return None
    return float(meta["smf:min_font_pt"]) * float(meta["smf:dpi"]) / 96 * shown_px / png_px


def figure_html(fig, dpi: int = 150, alt: str | None = None) -> str:
    """One figure as an ``<img>`` (PNG with its measurements) shown at ``SHOWN_PX_PER_INCH`` per inch and at
    least ``MIN_SHOWN_PX`` wide, never wider than the page."""
    import base64
    import html

    data = figure_png(fig, dpi)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    width, height = (int.from_bytes(data[k:k + 4], "big") for k in (16, 20))
    shown = display_width(width, dpi)
    return (f'<img src="data:image/png;base64,{base64.b64encode(data).decode()}" '
            f'alt="{html.escape(alt or "; ".join(titles) or "figure")}" class="smf-figure" '
            f'style="width:{shown}px;max-width:100%;height:auto" width="{shown}" '
            f'height="{round(height * shown / width)}">')


def show_figures_as_html() -> None:
    """In IPython, display every matplotlib figure through :func:`figure_html` (text/html, no second PNG copy), so
    each figure the book shows carries its measurements and is shown at the book's size."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    ip = get_ipython()
    if ip is None:
        return
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    plt.get_backend()  # resolve the backend now: loading the inline backend sets its own formatters, replaced below
    try:
        import matplotlib_inline.backend_inline  # noqa: F401
    except ImportError:
        pass

    formatters = ip.display_formatter.formatters
    formatters["text/html"].for_type(Figure, figure_html)
    for kind in ("image/png", "image/svg+xml", "application/pdf", "image/jpeg"):
        formatters[kind].type_printers.pop(Figure, None)
