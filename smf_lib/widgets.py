"""ipywidgets for the book: recompute a row selection live from stored read counts (Jupyter, Colab)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from .plotting import plot_selection
from .selection import SELECTORS


def selection_explorer(counts, stats, layers: list[int] | None = None, top_t: int = 128, max_t: int = 1024):
    """A top-t slider, a selector dropdown and a layer dropdown that redraw :func:`plot_selection`.

    Args:
        counts: per-layer read counts of a task batch (from :func:`smf_lib.plotting.load_snapshot`).
        stats: background statistics of the same layers.
        layers: labels of the layers (decoder indices) for the dropdown.
        top_t: initial top-t.
        max_t: slider maximum.

    Returns:
        An ``ipywidgets.VBox``; display it in a notebook.
    """
    import ipywidgets as w

    labels = layers or list(range(len(counts)))
    slider = w.IntSlider(value=top_t, min=1, max=max_t, step=1, description="top-t", continuous_update=False)
    selector = w.Dropdown(options=list(SELECTORS), value="kl", description="selector")
    layer = w.Dropdown(options=[(f"layer {lab}", j) for j, lab in enumerate(labels)], value=0, description="memory")
    out = w.Output()

    def redraw(*_):
        with out:
            out.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5.5, 4))
            plot_selection(counts, stats, layer.value, slider.value, selector.value, ax=ax, label=labels[layer.value])
            plt.show()

    for control in (slider, selector, layer):
        control.observe(redraw, names="value")
    redraw()
    return w.VBox([w.HBox([slider, selector, layer]), out])
