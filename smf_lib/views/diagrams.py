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
    """The product-key memory of one decoder layer, top to bottom: token -> query -> two sub-key tables ->
    k x k candidates -> top-k value rows -> weighted sum -> SiLU gate -> added to the MLP, labelled with sizes.
    Drawn 7 inches wide (one unit = one inch), so its text stays readable on the book's page.

    Returns:
        The matplotlib figure.
    """
    fig, ax = plt.subplots(figsize=(7, 9.4))
    ax.set_xlim(0, 7)
    ax.set_ylim(0, 9.4)
    ax.axis("off")
    n = n_keys**2
    _box(ax, 3.5, 8.85, 3.0, 0.7, f"the token's MLP input x  (d = {d})", size=10.5)
    _box(ax, 3.5, 7.75, 3.4, 0.8, f"query q = W_q x\n{heads} heads, each {k_dim} numbers", size=10.5)
    _arrow(ax, (3.5, 8.48), (3.5, 8.17))
    _box(ax, 1.75, 6.35, 2.9, 1.0, f"sub-keys K1: {n_keys} rows\nscore with q1 (half of q)\nkeep the top {knn}",
         face="#e8f4f0", size=10)
    _box(ax, 5.25, 6.35, 2.9, 1.0, f"sub-keys K2: {n_keys} rows\nscore with q2 (other half)\nkeep the top {knn}",
         face="#e8f4f0", size=10)
    _arrow(ax, (2.9, 7.33), (2.2, 6.88))
    _arrow(ax, (4.1, 7.33), (4.8, 6.88))
    _box(ax, 3.5, 4.85, 4.4, 0.95, f"{knn} x {knn} = {knn * knn} candidate slots (a, b),\nscore s1[a] + s2[b]; "
         f"keep the top {knn}", size=10.5)
    _arrow(ax, (1.9, 5.83), (2.6, 5.35))
    _arrow(ax, (5.1, 5.83), (4.4, 5.35))
    # the value table: a long strip of N rows with the few this token reads highlighted
    ax.add_patch(plt.Rectangle((0.5, 3.4), 6.0, 0.5, facecolor="white", edgecolor=INK, linewidth=1.2))
    rng = np.random.default_rng(3)
    for r in rng.choice(80, size=6, replace=False):
        ax.add_patch(plt.Rectangle((0.55 + r * 5.9 / 80, 3.43), 5.9 / 80, 0.44, facecolor=MEMORY, edgecolor="none"))
    ax.text(3.5, 3.28, f"value table V: {n:,} rows of {d} numbers;\nthe token reads only the marked rows",
            ha="center", va="top", fontsize=10, color=MEMORY, weight="bold")
    _arrow(ax, (3.5, 4.36), (3.5, 3.95), "slot numbers", size=10, offset=(0.75, -0.12))
    _box(ax, 1.75, 1.85, 2.9, 0.9, f"weighted sum of the\n{heads} x {knn} rows read: y", size=10.5)
    _box(ax, 5.25, 1.85, 2.9, 0.9, "gate: W2 (y * silu(W1 x))", face="#efeefa", size=10.5)
    _arrow(ax, (1.0, 3.38), (1.0, 2.32))
    _arrow(ax, (3.22, 1.85), (3.78, 1.85))
    _box(ax, 5.15, 0.7, 3.4, 0.6, "out = MLP(x) + alpha * gate", face="#fdeee3", size=10.5, weight="bold")
    _arrow(ax, (5.25, 1.39), (5.25, 1.02))
    ax.text(0.15, 0.7, f"{heads * knn} of {n:,} rows take\npart per token (layer {layer});\nSMF trains a few of them",
            ha="left", va="center", fontsize=10, color=INK)
    fig.tight_layout()
    return fig


def plot_pipeline(sizes: dict | None = None):
    """The pipeline in five steps, top to bottom: insert -> retrofit -> background statistics -> select and
    train -> evaluate, each with a note. Drawn 7 inches wide, so its text stays readable on the book's page.

    Args:
        sizes: optional one-line notes under each step, keyed by step name (e.g. the preset's sizes).

    Returns:
        The matplotlib figure.
    """
    steps = [("insert", "add memory layers; the model is unchanged", SOFT),
             ("retrofit", "train the whole memory on general chat text;\nthe base model stays frozen", "#e8f4f0"),
             ("background statistics", "count which rows general text reads", "#e8f4f0"),
             ("select and train", "each step: the rows the task reads far more\nthan general text; only those move",
              "#d4ede5"),
             ("evaluate", "learning (MedMCQA) and forgetting\n(WikiText, TriviaQA, held-out chat)", "#fdeee3")]
    rows = []
    for name, what, face in steps:
        note = what + ("\n" + sizes[name] if sizes and name in sizes else "")
        rows.append((name, note, face, 0.35 + 0.2 * note.count("\n")))
    height = sum(h * 2 + 0.35 for *_, h in rows)
    fig, ax = plt.subplots(figsize=(7, height))
    ax.set_xlim(0, 7)
    ax.set_ylim(0, height)
    ax.axis("off")
    y = height - 0.1
    prev = None
    for name, note, face, h in rows:
        y -= h + 0.1
        _box(ax, 1.15, y, 2.1, max(0.55, 2 * h - 0.15), name.replace("background ", "background\n"), face=face,
             size=10.5, weight="bold")
        ax.text(2.45, y, note, ha="left", va="center", fontsize=10, color=INK)
        if prev is not None:
            _arrow(ax, (1.15, prev), (1.15, y + max(0.55, 2 * h - 0.15) / 2 + 0.02))
        prev = y - max(0.55, 2 * h - 0.15) / 2 - 0.02
        y -= h + 0.25
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


def plot_selection_steps(counts, df, totals, n_docs: int, top_t: int, rows: int = 24, selector: str = "kl"):
    """The selection, step by step, for one layer and one batch: the ``rows`` rows the batch reads most, in that
    order. (1) the batch's share of its reads per row, p_i; (2) general text's share, q_i (background reads), and
    how many documents read the row; (3) the selector's score; (4) the top-t of the score: the only rows the
    masked update moves. Returns the figure, four panels one below the other (readable on a narrow page).

    Args:
        counts: (N,) the batch's reads per row; df, totals, n_docs: the layer's background statistics.
        top_t: rows the selector keeps; selector: ``"kl"`` or ``"tfidf"``.
    """
    import torch

    from ..selection import score_rows, select_rows

    c = torch.as_tensor(counts)
    score = score_rows(c, selector, df=df, totals=totals, n_docs=n_docs)
    chosen = set(select_rows(c, score, top_t).tolist())
    order = torch.argsort(c, descending=True, stable=True)[:rows].tolist()
    p = (c.double() / c.sum())[order].numpy()
    q = ((torch.as_tensor(totals).double() + 1) / (torch.as_tensor(totals).double() + 1).sum())[order].numpy()
    docs = torch.as_tensor(df)[order].numpy() / n_docs
    s = score[order].numpy()
    x = np.arange(len(order))
    fig, axes = plt.subplots(4, 1, figsize=(6.4, 8.2), sharex=True)
    axes[0].bar(x, p, color=INK)
    axes[0].set_ylabel("batch share\n$p_i$")
    axes[0].set_title(f"1. the batch reads these rows most (layer's top {rows})", loc="left")
    axes[1].bar(x - 0.2, q, width=0.4, color="0.6", label="share of general reads $q_i$")
    axes[1].set_ylabel("general share\n$q_i$")
    twin = axes[1].twinx()
    twin.plot(x + 0.2, docs, "o", color=DENSE, ms=4, label="documents reading it")
    twin.set_ylim(0, 1.05)
    twin.set_ylabel("documents\nreading it", color=DENSE)
    axes[1].set_title("2. how much general text reads them", loc="left")
    axes[2].bar(x, s, color=[MEMORY if i in chosen else "0.75" for i in order])
    axes[2].axhline(0, color="0.5", lw=0.8)
    axes[2].set_ylabel(f"{'KL' if selector == 'kl' else 'TF-IDF'}\nscore")
    axes[2].set_title("3. score: the batch's reads against general text's", loc="left")
    axes[3].bar(x, [1 if i in chosen else 0 for i in order], color=MEMORY)
    axes[3].set_yticks([0, 1], ["frozen", "trained"])
    axes[3].set_title(f"4. the top {top_t} scores over all rows: only these move", loc="left")
    axes[3].set_xticks(x, [str(i) for i in order], rotation=90)
    axes[3].set_xlabel("row (slot index), by the batch's reads")
    fig.tight_layout()
    return fig


def plot_how_to_read(labels=("method A", "method B"), level: float = 0.5):
    """How to read a learning-against-forgetting plot, drawn on made-up numbers: each arm's runs (one per rate)
    join into a curve from "learned little" to "learned much"; "equal learning" is a vertical line where both
    curves have points around it; the answer is the vertical gap between the curves on that line (higher kept
    more). Two points at different learning cannot be ranked by height. Returns the figure."""
    x = np.array([0.15, 0.35, 0.6, 0.85])
    curves = {labels[0]: (0.01 - 0.04 * x ** 2, MEMORY, "o"), labels[1]: (0.02 - 0.2 * x ** 2, DENSE, "s")}
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    at = {}
    for name, (y, color, marker) in curves.items():
        ax.plot(x, y, "-", color=color, lw=1.4, marker=marker, ms=7, label=f"{name}: one point per run (rate)")
        at[name] = float(np.interp(level, x, y))
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(level, color=ACCENT, ls="--", lw=1.2)
    ax.text(level + 0.015, 0.045, "equal learning:\nread every arm here", color=ACCENT, fontsize=10, va="top")
    (a, ya), (b, yb) = at.items()
    ax.plot([level, level], [ya, yb], "D", color=INK, ms=5, zorder=3)
    ax.add_patch(FancyArrowPatch((level + 0.03, yb), (level + 0.03, ya), arrowstyle="<|-|>", mutation_scale=10,
                                 color=INK, lw=1.1))
    ax.text(level - 0.03, yb - 0.02, f"the answer: {a} minus {b}\nat equal learning\n(higher kept more)",
            ha="right", va="top", fontsize=10, color=INK)
    ax.annotate("", xy=(0.97, -0.15), xytext=(0.72, -0.15), arrowprops=dict(arrowstyle="-|>", color="0.35"))
    ax.text(0.72, -0.145, "learned more", fontsize=10, color="0.35", va="bottom")
    ax.annotate("", xy=(0.03, 0.045), xytext=(0.03, 0.0), arrowprops=dict(arrowstyle="-|>", color="0.35"))
    ax.text(0.045, 0.045, "forgot less", fontsize=10, color="0.35", va="top")
    ax.set_xlim(0, 1.0)
    ax.set_ylim(-0.16, 0.05)
    ax.set_xticks([])
    ax.set_yticks([0], ["no change"])
    ax.set_xlabel("learning: what the run gained on the task (a change from its start)")
    ax.set_ylabel("forgetting probe: change from the start\n(up is better)")
    ax.set_title("How to read a learning-against-forgetting plot", loc="left")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2, fontsize=9, frameon=False)  # off the data
    fig.tight_layout()
    return fig
