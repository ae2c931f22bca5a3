"""Pictures of the idea, drawn by code: the memory layer's architecture, the pipeline, and which rows two texts read.

Every figure is plain matplotlib, so the book redraws it on each build from the sizes it is given.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

INK, SOFT, ACCENT, MEMORY, DENSE = "#222222", "#f2f2f2", "#d95f02", "#1b9e77", "#7570b3"


def _box(ax, x, y, w, h, text, face=SOFT, edge=INK, size=10, weight="normal"):
    ax.add_patch(FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                                facecolor=face, edgecolor=edge, linewidth=1.2))
    ax.text(x, y, text, ha="center", va="center", fontsize=size, color=INK, weight=weight, wrap=True)


def _arrow(ax, a, b, text=None, color=INK, size=9, offset=(0.0, 0.12)):
    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="-|>", mutation_scale=12, color=color, linewidth=1.2,
                                 shrinkA=2, shrinkB=2))
    if text:
        ax.text((a[0] + b[0]) / 2 + offset[0], (a[1] + b[1]) / 2 + offset[1], text, ha="center", va="bottom",
                fontsize=size, color=color)


def plot_architecture(d: int = 576, n_keys: int = 64, heads: int = 4, knn: int = 16, k_dim: int = 256,
                      layer: int = 15):
    """The product-key memory of one decoder layer, left to right: token -> query -> two sub-key tables ->
    k x k candidates -> top-k value rows -> weighted sum -> SiLU gate -> added to the MLP, labelled with sizes.

    Returns:
        The matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(12, 5.2))
    ax.set_xlim(0, 12)
    ax.set_ylim(0, 5.2)
    ax.axis("off")
    n = n_keys**2
    _box(ax, 0.85, 2.6, 1.4, 1.0, f"token's MLP\ninput x\n(d = {d})", size=10)
    _box(ax, 2.75, 2.6, 1.5, 1.0, f"query\nq = W_q x\n{heads} heads x {k_dim}", size=10)
    _arrow(ax, (1.55, 2.6), (2.0, 2.6))
    _box(ax, 4.75, 3.7, 1.7, 0.9, f"sub-keys K1\n{n_keys} rows\nscore q1: top {knn}", face="#e8f4f0", size=10)
    _box(ax, 4.75, 1.5, 1.7, 0.9, f"sub-keys K2\n{n_keys} rows\nscore q2: top {knn}", face="#e8f4f0", size=10)
    _arrow(ax, (3.5, 2.8), (3.9, 3.55), "half q1", size=9, offset=(-0.3, 0.05))
    _arrow(ax, (3.5, 2.4), (3.9, 1.65), "half q2", size=9, offset=(-0.3, -0.35))
    _box(ax, 6.75, 2.6, 1.6, 1.2, f"{knn} x {knn} = {knn * knn}\ncandidate sums\ns1[a] + s2[b]\n-> top {knn}",
         size=10)
    _arrow(ax, (5.6, 3.5), (5.95, 2.95))
    _arrow(ax, (5.6, 1.7), (5.95, 2.25))
    # the value table: a tall strip with a few highlighted rows
    ax.add_patch(plt.Rectangle((8.05, 0.55), 0.55, 4.1, facecolor="white", edgecolor=INK, linewidth=1.2))
    rng = np.random.default_rng(3)
    for r in rng.choice(60, size=6, replace=False):
        ax.add_patch(plt.Rectangle((8.05, 0.6 + r * 4.0 / 60), 0.55, 4.0 / 60, facecolor=MEMORY, edgecolor="none"))
    ax.text(8.33, 4.85, f"values V\n{n:,} rows x {d}", ha="center", va="bottom", fontsize=10, color=MEMORY,
            weight="bold")
    _arrow(ax, (7.55, 2.6), (8.0, 2.6), "slots", size=9)
    _box(ax, 9.55, 3.5, 1.3, 1.0, f"weighted sum\ny = sum w V[slot]\n({heads} x {knn} reads)", size=9)
    _arrow(ax, (8.65, 2.9), (8.9, 3.3))
    _box(ax, 9.55, 1.65, 1.3, 1.0, "gate\nW2 (y * silu(W1 x))", face="#efeefa", size=9)
    _arrow(ax, (9.55, 2.98), (9.55, 2.17))
    _box(ax, 11.3, 2.6, 1.1, 1.3, "MLP(x)\n+ alpha * out", face="#fdeee3", size=10, weight="bold")
    _arrow(ax, (10.22, 1.8), (10.74, 2.35))
    ax.text(6.0, 0.12, f"Only the {heads * knn} rows each token reads take part, of {n:,}: SMF trains a few of them "
            f"(layer {layer} of the book's model).", ha="center", fontsize=10, color=INK)
    fig.tight_layout()
    return fig


def plot_pipeline(sizes: dict | None = None):
    """The pipeline in five steps: insert -> retrofit -> background statistics -> select and train -> evaluate.

    Args:
        sizes: optional one-line notes under each step, keyed by step name (e.g. the preset's sizes).

    Returns:
        The matplotlib figure.
    """
    steps = [("insert", "add memory layers;\nthe model is unchanged", SOFT),
             ("retrofit", "train the whole memory\non general chat text;\nthe base stays frozen", "#e8f4f0"),
             ("background\nstatistics", "count which rows\ngeneral text reads", "#e8f4f0"),
             ("select and train", "each step: the rows the\ntask reads far more than\ngeneral text; only those move",
              "#d4ede5"),
             ("evaluate", "learning (MedMCQA)\nand forgetting (WikiText,\nTriviaQA, chat)", "#fdeee3")]
    fig, ax = plt.subplots(figsize=(12, 2.3))
    ax.set_xlim(0, 12)
    ax.set_ylim(0.45, 2.5)
    ax.axis("off")
    xs = np.linspace(1.2, 10.8, len(steps))
    for i, (x, (name, what, face)) in enumerate(zip(xs, steps)):
        _box(ax, x, 2.05, 1.9, 0.75, name, face=face, size=11, weight="bold")
        note = what + ("\n" + sizes[name.replace("\n", " ")] if sizes and name.replace("\n", " ") in sizes else "")
        ax.text(x, 1.45, note, ha="center", va="top", fontsize=9.5, color=INK)
        if i:
            _arrow(ax, (xs[i - 1] + 0.97, 2.05), (x - 0.97, 2.05))
    fig.tight_layout()
    return fig


def plot_read_overlap(reads_a, reads_b, n_keys: int, labels=("text A", "text B"), title: str | None = None):
    """Which of a layer's slots two texts read, on the n x n slot grid: read by the first only, the second only,
    or both (the overlap, where an update for one text would touch what the other reads).

    Args:
        reads_a, reads_b: (N,) read counts per slot of each text.
        n_keys: sub-keys per half (the grid is ``n_keys`` x ``n_keys``).
        labels: the two texts' names.

    Returns:
        The matplotlib figure.
    """
    a, b = np.asarray(reads_a) > 0, np.asarray(reads_b) > 0
    grid = np.zeros(n_keys * n_keys, dtype=int)
    grid[a & ~b], grid[b & ~a], grid[a & b] = 1, 2, 3
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(["#ffffff", MEMORY, DENSE, ACCENT])
    fig, ax = plt.subplots(figsize=(6.4, 7.4))
    ax.imshow(grid.reshape(n_keys, n_keys), cmap=cmap, vmin=0, vmax=3, interpolation="nearest")
    ax.set_xlabel("second-half sub-key b", fontsize=11)
    ax.set_ylabel("first-half sub-key a", fontsize=11)
    ax.tick_params(labelsize=10)
    counts = [int((a & ~b).sum()), int((b & ~a).sum()), int((a & b).sum())]
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in (MEMORY, DENSE, ACCENT)]
    names = [f"{labels[0]} only: {counts[0]} rows", f"{labels[1]} only: {counts[1]} rows",
             f"both: {counts[2]} rows"]
    ax.legend(handles, names, loc="upper center", bbox_to_anchor=(0.5, -0.1), fontsize=11, frameon=False, ncol=1)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
