"""ipywidgets for the book: explore a row selection by top-t, selector and memory layer.

Two forms of one explorer. In Jupyter or Colab, :func:`selection_explorer` recomputes the selection for any
top-t as the controls move. A web page built without a kernel cannot do that, so :func:`selection_gallery`
draws every state of a grid of top-t values in advance and links the controls to the figures in the browser
(``jsdlink``): it works in the static HTML of the book too.
"""

from __future__ import annotations

import io
import os

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import NullFormatter

from ..selection import SELECTORS
from .figures import add_png_text, display_width, measurements
from .plotting import plot_selection

STATIC_ENV = "SMF_STATIC_WIDGETS"  # set while the book is built: selection_explorer then returns the gallery
GALLERY_T = (16, 32, 64, 128, 256, 512, 1024)


def _controls(widgets):
    """Layouts and styles of the three controls, and the row that holds them: it wraps on a narrow screen,
    and the slider's track keeps a usable width."""
    slider = {"layout": widgets.Layout(flex="1 1 100%", min_width="240px"),  # a row of its own
              "style": {"description_width": "48px"}}
    dropdown = {"layout": widgets.Layout(flex="0 1 220px", min_width="180px", margin="2px 24px 2px 2px"),
                "style": {"description_width": "64px"}}

    def row(*controls):
        return widgets.HBox(list(controls), layout=widgets.Layout(flex_flow="row wrap"))

    return slider, dropdown, row


def _draw(counts, stats, layer: int, top_t: int, selector: str, label):
    fig, ax = plt.subplots(figsize=(5.5, 4))
    plot_selection(counts, stats, layer, top_t, selector, ax=ax, label=label)
    # the log axes' minor ticks carry no labels at these ranges; not formatting them saves a third of the time
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_minor_formatter(NullFormatter())
    fig.subplots_adjust(left=0.14, right=0.97, bottom=0.13, top=0.92)  # fixed margins: no layout pass per figure
    return fig


def selection_explorer(counts, stats, layers: list[int] | None = None, top_t: int = 128, max_t: int = 1024,
                       layer: int = 0, selector: str = "kl", static: bool | None = None):
    """A top-t slider, a selector dropdown and a memory-layer dropdown over ``smf_lib.views.plotting.plot_selection``.

    Args:
        counts: per-layer read counts of a task batch (from ``smf_lib.views.selection_tables.load_snapshot``).
        stats: background statistics of the same layers.
        layers: labels of the layers (decoder indices) for the dropdown.
        top_t: initial top-t.
        max_t: slider maximum (live form); the gallery offers the values of ``GALLERY_T`` up to it.
        layer: initial memory layer (position in ``counts``).
        selector: initial selector, a key of ``SELECTORS``.
        static: ``True`` for :func:`selection_gallery` (works without a kernel), ``False`` for the live form.
            ``None``: the gallery while ``SMF_STATIC_WIDGETS`` is set (the book's build sets it), else live.

    Returns:
        An ``ipywidgets.VBox``; display it in a notebook.
    """
    if static is None:
        static = bool(os.environ.get(STATIC_ENV))
    if static:
        ts = tuple(t for t in GALLERY_T if t <= max_t)
        return selection_gallery(counts, stats, layers, ts, top_t=top_t, layer=layer, selector=selector)
    import ipywidgets as w

    labels = layers or list(range(len(counts)))
    slider_kw, dropdown_kw, row = _controls(w)
    slider = w.IntSlider(value=top_t, min=1, max=max_t, step=1, description="top-t", continuous_update=False,
                         **slider_kw)
    chooser = w.Dropdown(options=list(SELECTORS), value=selector, description="selector", **dropdown_kw)
    memory = w.Dropdown(options=[(f"layer {lab}", j) for j, lab in enumerate(labels)], value=layer,
                        description="memory", **dropdown_kw)
    out = w.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            _draw(counts, stats, memory.value, slider.value, chooser.value, labels[memory.value])
            plt.show()

    for control in (slider, chooser, memory):
        control.observe(redraw, names="value")
    redraw()
    return w.VBox([row(slider, chooser, memory), out])


def selection_gallery(counts, stats, layers: list[int] | None = None, ts=GALLERY_T, selectors=None,
                      top_t: int = 128, layer: int = 0, selector: str = "kl", dpi: int = 90):
    """The explorer for pages without a kernel: every (layer, selector, top-t) figure drawn in advance.

    The figures sit in nested ``Stack`` widgets (layer > selector > top-t) whose ``selected_index`` follows the
    controls' ``index`` through ``jsdlink``, so moving a control changes the figure in the browser alone, in
    the book's static HTML as in Jupyter. Needs ipywidgets 8 (``Stack``).

    Args:
        counts: per-layer read counts of a task batch (from ``smf_lib.views.selection_tables.load_snapshot``).
        stats: background statistics of the same layers.
        layers: labels of the layers (decoder indices) for the dropdown.
        ts: the top-t values the slider steps through.
        selectors: selector names to offer (default: every key of ``SELECTORS``).
        top_t: initial top-t, one of ``ts``.
        layer: initial memory layer (position in ``counts``).
        selector: initial selector, one of ``selectors``.
        dpi: resolution of the figures (PNG, reduced to 64 colours to keep the page small).

    Returns:
        An ``ipywidgets.VBox``; display it in a notebook.
    """
    import ipywidgets as w

    if not hasattr(w, "Stack"):
        raise ImportError(f"selection_gallery needs ipywidgets >= 8 (Stack); found {w.__version__}")
    labels = layers or list(range(len(counts)))
    selectors = list(selectors or SELECTORS)
    ts = list(ts)
    if top_t not in ts or selector not in selectors:
        raise ValueError(f"the initial state must be in the gallery: top_t in {ts}, selector in {selectors}")

    def figure(j, name, t):
        return _image(w, _draw(counts, stats, j, t, name, labels[j]), dpi)

    slider_kw, dropdown_kw, row = _controls(w)
    slider = w.SelectionSlider(options=ts, value=top_t, description="top-t", continuous_update=True, **slider_kw)
    chooser = w.Dropdown(options=selectors, value=selector, description="selector", **dropdown_kw)
    memory = w.Dropdown(options=[(f"layer {lab}", j) for j, lab in enumerate(labels)], value=layer,
                        description="memory", **dropdown_kw)
    by_layer = []
    for j in range(len(counts)):
        by_selector = []
        for name in selectors:
            by_t = w.Stack([figure(j, name, t) for t in ts], selected_index=ts.index(top_t))
            w.jsdlink((slider, "index"), (by_t, "selected_index"))
            by_selector.append(by_t)
        stack = w.Stack(by_selector, selected_index=selectors.index(selector))
        w.jsdlink((chooser, "index"), (stack, "selected_index"))
        by_layer.append(stack)
    figures = w.Stack(by_layer, selected_index=layer)
    w.jsdlink((memory, "index"), (figures, "selected_index"))
    return w.VBox([row(slider, chooser, memory), figures])


def _image(w, fig, dpi: int):
    """A figure as an ``ipywidgets.Image``: a PNG reduced to 64 colours, carrying the figure's text measurements (as
    the book's other figures do), shown at the book's width."""
    from PIL import Image

    fig.set_dpi(dpi)
    fig.canvas.draw()
    meta = measurements(fig, dpi)
    pixels = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
    width_in = fig.get_figwidth()
    plt.close(fig)
    png = io.BytesIO()
    pixels.quantize(colors=64).save(png, format="png")
    return w.Image(value=add_png_text(png.getvalue(), meta), format="png",
                   layout=w.Layout(width=f"{display_width(width_in * dpi, dpi)}px", max_width="100%", height="auto"))
