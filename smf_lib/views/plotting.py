"""Seaborn figures the book draws from result files (``summary.csv``, run JSONs, the selection snapshot)."""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch

from ..probes import metrics as probe_metrics
from ..selection import layer_stats, score_rows, select_rows
from ..study.arms import ARMS, PALETTE
from ..study.paired_stats import METRICS
from ..study.tables import rate_label, seed_label
from .figures import figure_html
from .pilot_plots import INIT_COLOURS, plot_learning_by_share, plot_retrofit_pilot  # noqa: F401 (old home)
from .selection_tables import (example_selection, load_snapshot, scores_table,  # noqa: F401 (their old home)
                               selection_overlap)

class _Labels(Mapping):
    """Each metric's label, from the probe registry (:data:`smf_lib.probes.PROBES`), read on every access."""

    def __getitem__(self, key):
        return probe_metrics()[key].label

    def __iter__(self):
        return iter(probe_metrics())

    def __len__(self):
        return len(probe_metrics())


LABELS = _Labels()


class Panels:
    """Figures shown one below the other, each at the book's size (:func:`smf_lib.views.figures.figure_html`: at
    least 600 px wide where the page allows, never wider than the page), so their text stays readable on a wide
    page and on a phone. Displays as HTML in Jupyter, Colab and the book; the figures are closed."""

    def __init__(self, figures, dpi: int = 150):
        figures = [f.figure if hasattr(f, "figure") and not hasattr(f, "savefig") else f for f in figures]
        if not figures:
            raise ValueError("Panels needs at least one matplotlib figure (or axes)")
        self.images = []
        for fig in figures:
            self.images.append(figure_html(fig, dpi))
            plt.close(fig)

    def _repr_html_(self) -> str:
        cells = "".join(f"<div>{im}</div>" for im in self.images)
        return f'<div class="smf-panels" style="display:flex;flex-direction:column;gap:8px">{cells}</div>'

    def __repr__(self) -> str:
        return f"Panels({len(self.images)} figures)"


def outside_legend(ax, *args, **kwargs):
    """A legend to the right of the axes, outside the data (the book's figures keep every data point visible)."""
    kwargs = {"frameon": False, "loc": "upper left", "bbox_to_anchor": (1.02, 1), "borderaxespad": 0, **kwargs}
    return ax.legend(*args, **kwargs)


def _higher_is_better(metric: str) -> bool:
    """Whether a larger value of ``metric`` is better (more learned, or less forgotten)."""
    return metric not in METRICS or METRICS[metric][2] > 0


def plot_tradeoff(summary: pd.DataFrame, forgetting: str = "wikitext_ppl", ax=None):
    """Learning (delta MedMCQA accuracy) against forgetting (delta of a probe), with 95% paired intervals; each
    axis says which way is better."""
    ax = ax or plt.subplots(figsize=(5.5, 4))[1]
    df = summary[summary["method"] != "base"]
    for _, r in df.iterrows():
        x, y = r["d_medmcqa_acc"] * 100, r[f"d_{forgetting}"]
        xerr = [[x - r["d_medmcqa_acc_lo"] * 100], [r["d_medmcqa_acc_hi"] * 100 - x]]
        yerr = [[y - r[f"d_{forgetting}_lo"]], [r[f"d_{forgetting}_hi"] - y]]
        ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o", color=PALETTE.get(r["method"], "k"), capsize=3,
                    label=r["method"])
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set_xlabel("Δ MedMCQA accuracy vs base (points)")
    ax.set_ylabel(f"Δ {LABELS.get(forgetting, forgetting)} vs base")
    _better(ax, "right", "up" if _higher_is_better(forgetting) else "down")
    handles = dict(zip(*ax.get_legend_handles_labels()[::-1]))  # one entry per method, whatever its seeds
    outside_legend(ax, handles.values(), handles.keys())
    return ax


def plot_answer(points: pd.DataFrame, learn: str = "d_medmcqa_gold_margin", forget: str = "d_chat_loglik", ax=None,
                title: str | None = None, start: str = "its start"):
    """The one-figure answer: each run's learning (x) against its forgetting (y), both as paired changes with their
    95% intervals on both axes, one colour per method (seeds drawn as separate points, with circles and squares).
    A method run at several rates is joined in order of rate, each point labelled with its rate; a method run at
    one rate names it in the legend.

    At equal learning (the same x), the point on the better side of the y axis forgot less; where two methods'
    learning intervals do not overlap, they are not at matched learning and the plot cannot rank them.

    Args:
        points: one row per run with ``method``, ``lr``, ``seed`` and ``LEARN``/``FORGET`` with ``_lo``/``_hi``
            columns, e.g. the end points of :func:`~smf_lib.study.results.trajectory_table` (``against="start"``)
            or the rows of :func:`~smf_lib.study.results.net_table`.
        start: what the changes are measured against, for the axis labels.
    """
    ax = ax or plt.subplots(figsize=(7, 4.6))[1]
    if points.empty:
        ax.text(0.5, 0.5, "no finished runs yet", ha="center", transform=ax.transAxes)
        return ax
    scale = 100 if learn.endswith("_acc") else 1
    for method, g in points.groupby("method", sort=False):
        colour = PALETTE.get(method, "k")
        several = g["lr"].nunique() > 1
        for k, (_, gs) in enumerate(g.groupby("seed", sort=True)):
            gs = gs.sort_values("lr")
            x, y = gs[learn] * scale, gs[forget]
            xerr = [x - gs[f"{learn}_lo"] * scale, gs[f"{learn}_hi"] * scale - x]
            yerr = [y - gs[f"{forget}_lo"], gs[f"{forget}_hi"] - y]
            label = method if several else f"{method} ({gs['lr'].iloc[0]:g})"
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, fmt="o" if k == 0 else "s", color=colour, capsize=3, ms=6,
                        ls="-" if several else "none", lw=1, label=label if k == 0 else None)
            if several:
                for xi, yi, lr in zip(x, y, gs["lr"]):
                    ax.annotate(f"{lr:g}", (xi, yi), xytext=(5, 5), textcoords="offset points", fontsize=9.5,
                                color=colour)
    seeds = sorted(points["seed"].dropna().unique())
    if len(seeds) > 1:  # the markers name the seeds: explain them in the legend
        for k, seed in enumerate(seeds[:2]):
            ax.plot([], [], "o" if k == 0 else "s", color="0.45", ms=6, ls="none", label=f"seed {int(seed)}")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.axvline(0, color="0.7", lw=0.8)
    ax.set_xlabel(f"Δ {LABELS.get(learn[2:], learn)} vs {start}" + (" (points)" if scale == 100 else ""))
    ax.set_ylabel(f"Δ {LABELS.get(forget[2:], forget)} vs {start}")
    _better(ax, "right", "up" if _higher_is_better(forget[2:]) else "down")
    if title:
        ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()  # the methods first, then what the markers mean
    order = sorted(range(len(labels)), key=lambda i: labels[i].startswith("seed "))
    outside_legend(ax, [handles[i] for i in order], [labels[i] for i in order])
    return ax


def _single_panels(sizes, **kwargs) -> tuple[list, list]:
    """One one-panel figure per size in ``sizes``: (figures, their axes), for the ``split`` form of a plot."""
    figs = [plt.figure(figsize=size, **kwargs) for size in sizes]
    return figs, [f.add_subplot() for f in figs]


def _row_names(df: pd.DataFrame) -> list[str]:
    """A label per summary row: the method, plus the seed where the method has several rows, plus the rate where
    that still leaves two rows alike."""
    seeds = [f"{m} s{seed_label(s)}" for m, s in zip(df["method"], df.get("seed", pd.Series([""] * len(df))))]
    rates = [f"{n} lr {rate_label(r)}" for n, r in zip(seeds, df.get("lr", pd.Series([""] * len(df))))]
    method_twice = df["method"].duplicated(keep=False).tolist()
    seed_twice = pd.Series(seeds).duplicated(keep=False).tolist()
    return [r if st else s if mt else m
            for m, s, r, mt, st in zip(df["method"], seeds, rates, method_twice, seed_twice)]


def plot_deltas(summary: pd.DataFrame, metrics=("medmcqa_acc", "wikitext_ppl", "triviaqa_alias_loglik"),
                per_row: int = 2, split: bool = False):
    """One panel per metric (``per_row`` panels to a row): delta to base per method with its paired-bootstrap 95%
    interval; each panel's title says which way is better. Metrics the summary lacks are left out. With
    ``split``, a list of one-panel figures instead (show them with :class:`Panels`)."""
    metrics = [m for m in metrics if f"d_{m}" in summary and summary[f"d_{m}"].notna().any()]
    if not metrics:
        raise ValueError("none of the metrics has deltas in this summary: pass metrics it holds (d_* columns)")
    df = summary[summary["method"] != "base"].reset_index(drop=True)
    names = _row_names(df)
    height = 0.35 * len(df) + 1.3
    if split:
        figs, panels = _single_panels([(4.1, height)] * len(metrics))
    else:
        cols = min(per_row, len(metrics))
        rows = -(-len(metrics) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.1 * cols, height * rows), sharey=True, squeeze=False)
        figs, panels = [fig], list(axes.flat)
    for ax, m in zip(panels, metrics):
        scale = 100 if m.endswith("_acc") else 1
        y = np.arange(len(df))
        d = df[f"d_{m}"] * scale
        err = np.vstack([d - df[f"d_{m}_lo"] * scale, df[f"d_{m}_hi"] * scale - d])
        ax.barh(y, d, xerr=err, color=[PALETTE.get(x, "k") for x in df["method"]], capsize=3)
        ax.axvline(0, color="0.3", lw=0.8)
        ax.set_yticks(y, names)
        better = "right" if _higher_is_better(m) else "left"
        ax.set_title(f"Δ {LABELS.get(m, m)}" + (" (points)" if scale == 100 else "") + f"\nbetter: {better}",
                     fontsize=10)
        if split:
            ax.invert_yaxis()
    if split:
        for fig in figs:
            fig.tight_layout()
        return figs
    panels[0].invert_yaxis()  # shared: every panel lists the methods top to bottom in table order
    for ax in panels[len(metrics):]:
        ax.set_visible(False)
    figs[0].tight_layout()
    return figs[0]


def plot_loss_curves(runs: list[dict], ax=None, smooth: int = 5):
    """Training loss per optimizer step for every trained run (rolling mean over ``smooth`` steps); the legend
    names each method once."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    named = set()
    for r in runs:
        if not r.get("train_log"):
            continue
        s = pd.Series([x["loss"] for x in r["train_log"]]).rolling(smooth, min_periods=1).mean()
        label = "_nolegend_" if r["method"] in named else r["method"]
        named.add(r["method"])
        ax.plot(np.arange(1, len(s) + 1), s, label=label, color=PALETTE.get(r["method"]))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (MedMCQA)")
    if ax.get_lines():
        outside_legend(ax)
    return ax


def plot_reads(indices: torch.Tensor, weights: torch.Tensor, n_keys: int, ax=None, area: float = 1500.0):
    """One token's reads on the n_keys x n_keys slot grid (slot = a * n_keys + b), one colour per head; a marker's
    area is proportional to the read's weight (``area`` square points for weight 1)."""
    ax = ax or plt.subplots(figsize=(4.6, 4.4))[1]
    for h in range(indices.shape[0]):
        a, b = indices[h] // n_keys, indices[h] % n_keys
        ax.scatter(b, a, s=area * weights[h].numpy(), alpha=0.6, linewidth=0, label=f"head {h}")
    ax.set_xlim(-1, n_keys)
    ax.set_ylim(n_keys, -1)
    ax.set_xlabel("second-half sub-key b")
    ax.set_ylabel("first-half sub-key a")
    ax.set_title(f"slots one token reads (area = weight, {float(weights.min()):.3f} to {float(weights.max()):.3f})",
                 fontsize=10)
    outside_legend(ax, markerscale=0.6)
    return ax


def plot_row_changes(changes: list[torch.Tensor], n_keys: int, labels=None, per_row: int = 2, split: bool = False):
    """Which value rows a training run moved: per memory layer, the size of each row's change (the norm of
    after - before) on the n_keys x n_keys slot grid, unmoved rows blank; ``per_row`` panels to a row. With
    ``split``, a list of one-panel figures on one shared colour scale (show them with :class:`Panels`)."""
    from matplotlib.colors import LogNorm

    labels = labels if labels is not None else list(range(len(changes)))
    moved = [c[c > 0] for c in changes]
    if not any(len(m) for m in moved):
        raise ValueError("no value row moved: nothing to draw")
    lo = min(float(m.min()) for m in moved if len(m))
    hi = max(float(m.max()) for m in moved if len(m))
    norm = LogNorm(lo, max(hi, lo * 1.01))
    if split:
        figs, panels = _single_panels([(4.5, 3.5)] * len(changes), layout="constrained")
    else:
        cols = min(per_row, len(changes))
        rows = -(-len(changes) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.7 * cols + 0.8, 3.5 * rows), squeeze=False,
                                 layout="constrained")
        figs, panels = [fig], list(axes.flat)
    for k, (ax, c, label) in enumerate(zip(panels, changes, labels)):
        grid = np.ma.masked_equal(c.reshape(n_keys, n_keys).double().numpy(), 0)
        image = ax.imshow(grid, cmap="viridis", norm=norm, interpolation="nearest")
        ax.set_title(f"layer {label}: {int((c > 0).sum())} of {c.numel():,} rows moved", fontsize=10)
        ax.set_xlabel("sub-key b")
        ax.set_ylabel("sub-key a")
        if split:
            figs[k].colorbar(image, ax=ax, label="size of the row's change", shrink=0.8)
    if split:
        return figs
    for ax in panels[len(changes):]:
        ax.set_visible(False)
    figs[0].colorbar(image, ax=panels[:len(changes)], label="size of the row's change", shrink=0.8)
    return figs[0]


def plot_selection(counts, stats, layer: int, top_t: int, selector: str = "kl", ax=None, label=None):
    """Every read row of memory ``layer`` (position in ``counts``; ``label``: its decoder index for the title):
    task share against background share, the selected top-t highlighted."""
    ax = ax or plt.subplots(figsize=(5.5, 4))[1]
    c, tot = counts[layer].double(), stats.totals[layer].double()
    read = c > 0
    p, q = c / c.sum(), (tot + 1) / (tot + 1).sum()
    chosen = select_rows(counts[layer], score_rows(counts[layer], selector, **layer_stats(stats, layer)), top_t)
    mask = torch.zeros_like(read)
    mask[chosen] = True
    df = pd.DataFrame({"background share q": q[read].numpy(), "task share p": p[read].numpy(),
                       "selected": np.where(mask[read].numpy(), f"top-{top_t} ({selector})", "not selected")})
    sns.scatterplot(df, x="background share q", y="task share p", hue="selected", s=12, linewidth=0, ax=ax,
                    palette={"not selected": "0.75", f"top-{top_t} ({selector})": PALETTE["smf-kl"]})
    ax.set_xscale("log")
    ax.set_yscale("log")
    lim = [min(df.min(numeric_only=True)), max(df.max(numeric_only=True))]
    ax.plot(lim, lim, color="0.5", lw=0.8, ls="--")
    ax.set_title(f"layer {layer if label is None else label}: rows read by the task batch ({selector})", fontsize=10)
    return ax


def plot_overlap(overlap: pd.DataFrame, split: bool = False):
    """Jaccard overlap of the KL and TF-IDF selections, and their hub-row shares, against top-t. With ``split``,
    the two panels as two figures (show them with :class:`Panels`)."""
    if split:
        figs, axes = _single_panels([(4.4, 3.4), (5.2, 3.4)])
    else:
        fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.4))
        figs = [fig]
    sns.lineplot(overlap, x="top_t", y="jaccard", hue="layer", marker="o", ax=axes[0], palette="viridis")
    axes[0].set_title("KL vs TF-IDF: overlap of selected rows", fontsize=10)
    axes[0].set_ylabel("Jaccard overlap")
    outside_legend(axes[0], title="memory layer")
    long = overlap.melt(id_vars=["layer", "top_t"], value_vars=["kl_hub_share", "tfidf_hub_share"],
                        var_name="selector", value_name="hub share")
    long["selector"] = long["selector"].str.replace("_hub_share", "")
    sns.lineplot(long, x="top_t", y="hub share", hue="selector", style="layer", marker="o", ax=axes[1])
    axes[1].set_title("share of selected rows that are hub rows", fontsize=10)
    outside_legend(axes[1])
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("top-t")
    for fig in figs:
        fig.tight_layout()
    return figs if split else figs[0]


def plot_benchmark(df: pd.DataFrame, split: bool = False):
    """Step time and peak memory per method from a benchmark results table. With ``split``, the two panels as two
    figures (show them with :class:`Panels`)."""
    if split:
        figs, axes = _single_panels([(4.4, 3.2)] * 2)
    else:
        fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.2))
        figs = [fig]
    sns.barplot(df, y="method", x="median_step_s", ax=axes[0], color="#1b9e77")
    axes[0].set_xlabel("median step time (s)")
    sns.barplot(df, y="method", x="peak_mem_mb", ax=axes[1], color="#7570b3")
    axes[1].set_xlabel("peak memory (MB)")
    axes[1].set_ylabel("" if not split else "method")
    for fig in figs:
        fig.tight_layout()
    return figs if split else figs[0]


def plot_slot_scaling(slots: pd.DataFrame, ax=None):
    """Strict-SMF step time against the number of slots per memory (log x): colour per allocator setting, line
    style per run (when a ``run`` column is present)."""
    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    if "unused_tensor_mb" in slots:
        slots = slots[slots["unused_tensor_mb"] == 0]  # leave out the control rows
    hue = "allocator" if "allocator" in slots else None
    style = "run" if "run" in slots else None
    sns.lineplot(slots, x="n_slots", y="median_step_s", hue=hue, style=style, marker="o", ax=ax)
    ax.set_xscale("log", base=2)
    ax.set_ylim(0, None)
    ax.set_xlabel("slots per memory layer (N)")
    ax.set_ylabel("median step time (s)")
    return ax


def _better(ax, x_better: str, y_better: str):
    """Mark which way is better on each axis, in the axis labels (set them first); an annotation above the axes
    would collide with the axis's scale factor (e.g. 1e-5)."""
    ax.set_xlabel(f"{ax.get_xlabel()}\n({x_better} is better)")
    ax.set_ylabel(f"{ax.get_ylabel()}\n({y_better} is better)")


def _forget_scale(ax, values, forget: str, yscale: str):
    """``yscale="auto"``: a drift KL spanning more than two decades gets a symmetric-log axis (linear below the
    smallest positive value, so a path's start at 0 stays on it); anything else stays linear."""
    v = pd.Series(values, dtype=float).dropna()
    pos = v[v > 0]
    if yscale == "auto":
        wide = forget.endswith("drift_kl") and len(pos) and (v >= 0).all() and pos.max() > 100 * pos.min()
        yscale = "symlog" if wide else "linear"
    if yscale == "symlog":
        ax.set_yscale("symlog", linthresh=10 ** np.floor(np.log10(pos.min())) if len(pos) else 1e-6)
    elif yscale != "linear":
        ax.set_yscale(yscale)


def plot_paths(traj: pd.DataFrame, learn: str = "d_medmcqa_gold_loglik", forget: str = "chat_drift_kl", ax=None,
               yscale: str = "auto", against: str = "base"):
    """Learning (x) against forgetting (y) along training, one path per method (mean over seeds; the preset's
    rate only), from ``trajectories.csv``: at matched learning, the path on the better side of y forgets less (the
    y label says which side that is for ``forget``).

    ``yscale``: ``"auto"`` (symmetric-log for a drift that spans more than two decades, else linear),
    ``"linear"``, ``"symlog"`` or ``"log"``. ``against``: what the table's changes are measured from (``"base"`` or
    ``"start"``, as :func:`~smf_lib.study.results.trajectory_table` was called), for the axis labels."""
    ax = ax or plt.subplots(figsize=(5.5, 4))[1]
    if traj.empty:
        ax.text(0.5, 0.5, "no trajectories yet", ha="center", transform=ax.transAxes)
        return ax
    rate = traj.groupby("method")["lr"].transform(lambda s: s.mode().iloc[0])  # the preset's rate per method
    main = traj[traj["lr"] == rate] if "lr" in traj else traj
    scale = 100 if learn.endswith("_acc") else 1
    _forget_scale(ax, main.groupby(["method", "step"])[forget].mean(), forget, yscale)
    for method, g in main.groupby("method", sort=False):
        m = g.groupby("step")[[learn, forget]].mean().reset_index()
        ax.plot(m[learn] * scale, m[forget], marker="o", ms=4, color=PALETTE.get(method, "k"), label=method)
        ax.annotate("", xy=(m[learn].iloc[-1] * scale, m[forget].iloc[-1]),
                    xytext=(m[learn].iloc[-2] * scale, m[forget].iloc[-2]) if len(m) > 1 else None,
                    arrowprops=dict(arrowstyle="->", color=PALETTE.get(method, "k")))
    since = "since each run's start" if against == "start" else "vs base"
    ax.set_xlabel(f"{LABELS.get(learn[2:], learn)} gain {since}" + (" (points)" if scale == 100 else ""))
    ax.set_ylabel(f"{LABELS.get(forget.removeprefix('d_'), forget)} change {since}")
    _better(ax, "right", "up" if _higher_is_better(forget.removeprefix("d_")) else "down")
    outside_legend(ax)
    return ax


def plot_frontier(traj: pd.DataFrame, learn: str = "d_medmcqa_gold_loglik", forget: str = "chat_drift_kl", ax=None,
                  yscale: str = "auto"):
    """The end of every run at every learning rate (mean over seeds): learning gain against forgetting, one line
    per method through its rates. A swept method's points are labelled with their rates, in its colour; a method
    trained at one rate names it in the legend. ``yscale`` as in :func:`plot_paths`."""
    ax = ax or plt.subplots(figsize=(5.5, 4))[1]
    if traj.empty:
        ax.text(0.5, 0.5, "no runs yet", ha="center", transform=ax.transAxes)
        return ax
    ends = traj[traj["step"] == traj["steps"]]
    scale = 100 if learn.endswith("_acc") else 1
    points = ends.groupby(["method", "lr"], sort=False)[[learn, forget]].mean().reset_index()
    _forget_scale(ax, points[forget], forget, yscale)
    swept = 0
    for method, m in points.groupby("method", sort=False):
        m = m.sort_values("lr")
        color = PALETTE.get(method, "k")
        label = method if len(m) > 1 else f"{method} ({m['lr'].iloc[0]:g})"
        ax.plot(m[learn] * scale, m[forget], marker="o", color=color, label=label)
        if len(m) > 1:  # alternate the side of the labels between swept methods, so that neighbours do not collide
            offset = (4, 3) if swept % 2 == 0 else (-4, -9)
            for _, r in m.iterrows():
                ax.annotate(f"{r['lr']:g}", (r[learn] * scale, r[forget]), fontsize=9.5, xytext=offset, color=color,
                            textcoords="offset points", ha="left" if offset[0] > 0 else "right")
            swept += 1
    ax.set_xlabel(f"{LABELS.get(learn[2:], learn)} gain vs base" + (" (points)" if scale == 100 else ""))
    ax.set_ylabel(LABELS.get(forget.removeprefix("d_"), forget))
    _better(ax, "right", "up" if _higher_is_better(forget.removeprefix("d_")) else "down")
    outside_legend(ax)
    return ax


def plot_equal_learning(runs: list[dict], arms, seeds=(0, 1), probe: str = "chat_loglik", level: float | None = None,
                        points: int = 12, ax=None, legend: bool = True):
    """Each arm's change in ``probe`` (dev items) at each level of dev learning (MedMCQA gold margin), read along
    its trajectories as :mod:`smf_lib.study.frontier` does (the smallest swept rate that reaches the level, mean
    over seeds and items): one line per arm, so at any x the arms are compared at equal learning. The x axis runs to
    twice the learning every arm reaches (the range where they are compared), in ``points`` steps and through
    ``level``: the comparison's level, marked (and named, with the legend, where ``legend``)."""
    from ..study.frontier import at_level, final_learning

    ax = ax or plt.subplots(figsize=(6.4, 4.2))[1]
    ends = final_learning(runs, arms, seeds)
    top = float(ends["learning"].max()) if len(ends) else 0.0
    shared = float(ends.groupby("arm")["learning"].max().min()) if len(ends) else 0.0
    top = min(top, 2 * shared) if shared > 0 else top  # the range the arms share, where they are compared
    grid = sorted({*np.linspace(top / points, top, points), *([level] if level is not None and level > 0 else [])})
    for arm in arms:
        xs, ys = [], []
        for x in grid:
            seeds_at = at_level(runs, (arm,), seeds, float(x), (probe,))[arm]["seeds"]
            values = [float(np.mean(v[probe])) for v in seeds_at.values() if probe in v]
            if values:
                xs.append(x)
                ys.append(float(np.mean(values)))
        if xs:
            label = ARMS[arm].label if arm in ARMS else arm
            ax.plot(xs, ys, marker="o", ms=3, color=PALETTE.get(arm, "k"), label=label)
    if level is not None:
        ax.axvline(level, ls=":", color="0.3")
    if level is not None and legend:
        ax.annotate("compared here", (level, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                    textcoords="offset points", color="0.3")
    ax.axhline(0, color="0.7", lw=0.8)
    ax.set_xlabel("learning: dev gold-margin gain, nats")
    ax.set_ylabel(f"{LABELS.get(probe, probe)} change")
    _better(ax, "right", "up" if _higher_is_better(probe) else "down")
    if legend:
        outside_legend(ax)
    return ax
