"""Figures of the pilots. The retrofit pilot (``results/retrofit-pilot``): which recipe makes a living memory, and
does SMF learn more on a memory that carries more. The spread pilot (``results/spread-pilot``): does a retrofit
keep the memory's reads spread, how large must the table be for a question to read few rows of its own, and what
that does to SMF."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from ..spread import MAX_TOP5_SHARE
from ..study.arms import PALETTE

INIT_COLOURS = {"zero": "#1b9e77", "zero-w2": "#7570b3", "paper": "#d95f02"}

#: The sizing goals of the spread pilot: a question reads at most this share of a layer's rows ...
FOOTPRINT_GOAL = 0.05
#: ... and shares at most this share of them with a general paragraph of the same length.
OVERLAP_GOAL = 0.10


def spread_after(table: pd.DataFrame) -> pd.DataFrame:
    """Per recipe and layer, the spread after the retrofit against the same memory before it (random addressing):
    effective rows (and their ratio), the top 5% of rows' share of reads, a question's footprint and overlap.

    Args:
        table: ``smf_lib.study.spread_pilot.spread_table``.
    """
    first = table[table["step"] == 0].set_index(["recipe", "layer"])
    last = table.loc[table.groupby(["recipe", "layer"])["step"].idxmax()].set_index(["recipe", "layer"])
    out = pd.DataFrame({
        "slots": last["n_slots"], "share": last["share"], "loss_change": last["loss_change"],
        "effective_rows": last["general_effective_rows"], "random_effective_rows": first["general_effective_rows"],
        "top5_share": last["general_top5_share"], "random_top5_share": first["general_top5_share"],
        "footprint": last["footprint"], "overlap": last["overlap"], "hub_rows": last["hub_rows"],
        "hub_reads": last["hub_reads"], "seconds_per_step": last["seconds_per_step"]})
    out["effective_ratio"] = out["effective_rows"] / out["random_effective_rows"]
    out = out.reset_index()
    out["layer"] = out["layer"].astype(int)
    return out.sort_values(["slots", "recipe", "layer"]).reset_index(drop=True)


def plot_spread(after: pd.DataFrame, recipes=("trained", "frozen", "half-norm", "balance"), ax=None):
    """Effective rows after each retrofit as a share of random addressing's, per layer: a collapsed memory reads a
    few percent of what random addressing does, a spread one about all of it."""
    df = after[after["recipe"].isin(recipes)]
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 3.4))
    sns.barplot(df, x="recipe", y="effective_ratio", hue="layer", order=[r for r in recipes if r in set(df["recipe"])],
                ax=ax, palette="crest")
    ax.axhline(0.5, ls=":", color="0.3")
    ax.text(0.5, 0.52, "half of random addressing's", transform=ax.get_yaxis_transform(), ha="center",
            va="bottom", color="0.3")
    ax.set(xlabel="retrofit recipe (4,096 slots)", ylabel="effective rows / random addressing's",
           ylim=(0, 1.15), title="Do the reads stay spread after the retrofit?")
    ax.legend(title="layer", loc="upper left")
    return ax


def plot_sizes(after: pd.DataFrame, base: str = "frozen", split: bool = False):
    """A question's footprint (rows it reads, as a share of the layer) and its overlap with a general paragraph
    of the same length, against the table's size, per layer; the dotted lines are the pilot's goals."""
    df = after[(after["recipe"] == base) | after["recipe"].str.startswith(f"{base}-n")]
    df = df.drop_duplicates(["slots", "layer"]).sort_values("slots")
    panels = (("footprint", FOOTPRINT_GOAL, "rows a question reads, share of the layer"),
              ("overlap", OVERLAP_GOAL, "of those, shared with general text"))
    figs = [plt.subplots(figsize=(6.4, 3.2)) for _ in panels] if split else None
    if not split:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
        figs = [(fig, ax) for ax in axes]
    for (_, ax), (col, goal, label) in zip(figs, panels):
        sns.lineplot(df, x="slots", y=col, hue="layer", marker="o", ax=ax, palette="crest")
        ax.axhline(goal, ls=":", color="0.3")
        ax.set(xscale="log", xlabel="slots per layer", ylabel=label, ylim=(0, None))
        ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
        ax.legend(title="layer")
    return [f for f, _ in figs] if split else figs[0][0]


def plot_memory_effect(effect: pd.DataFrame, ax=None):
    """What spread and size do to SMF: each memory's learning (dev gold-margin change) against its chat change
    after the same SMF steps, one line per memory and selector through its rates, with 95% intervals."""
    if ax is None:
        _, ax = plt.subplots(figsize=(6.4, 4.2))
    order = effect.sort_values("slots")["memory"].drop_duplicates().tolist()
    colours = dict(zip(order, sns.color_palette("viridis", len(order))))
    for (memory, selector), g in effect.groupby(["memory", "selector"], sort=False):
        g = g.sort_values("lr")
        ax.errorbar(g["learning"], g["chat_change"], xerr=[g["learning"] - g["learning_lo"],
                                                           g["learning_hi"] - g["learning"]],
                    yerr=[g["chat_change"] - g["chat_change_lo"], g["chat_change_hi"] - g["chat_change"]],
                    color=colours[memory], marker="o" if selector == "kl" else "s",
                    ls="-" if selector == "kl" else "--", capsize=2, lw=1.2,
                    label=f"{memory} ({int(g['slots'].iloc[0]):,} slots), {'KL' if selector == 'kl' else 'TF-IDF'}")
    ax.axhline(0, color="0.6", lw=0.8)
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set(xlabel="learning: dev gold-margin change, nats (right is more)",
           ylabel="held-out chat log-lik change, nats (up is better)",
           title="SMF on each memory: KL circles, TF-IDF squares; rates joined")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2, frameon=False)
    return ax


def plot_retrofit_pilot(table: pd.DataFrame, min_share: float = 0.10, split: bool = False):
    """The retrofit pilot (:func:`smf_lib.study.pilot.pilot_table`): the memory's smallest per-layer share of the
    MLP's output, and the held-out loss change with its 95% interval, along each recipe's retrofit.

    Returns:
        The figure, or with ``split`` a list of two one-panel figures.
    """
    figs = [plt.subplots(figsize=(6.4, 4.4)) for _ in range(2)] if split else None
    if not split:
        fig, axes = plt.subplots(1, 2, figsize=(12.5, 4.4))
    for recipe in table["recipe"].unique():
        t = table[table["recipe"] == recipe].sort_values("step")
        init, lr = t["init"].iloc[0], t["lr"].iloc[0]
        style = dict(color=INIT_COLOURS.get(init, "#333333"), linestyle="-" if lr <= 2e-3 else "--", marker="o",
                     label=f"{init}, rate {lr:g}")
        ax0 = figs[0][1] if split else axes[0]
        ax1 = figs[1][1] if split else axes[1]
        ax0.plot(t["step"], 100 * t["min_share"], **style)
        ax1.plot(t["step"], t["loss_change"], **style)
        ax1.fill_between(t["step"], t["loss_lo"], t["loss_hi"], color=style["color"], alpha=0.15)
    ax0 = figs[0][1] if split else axes[0]
    ax1 = figs[1][1] if split else axes[1]
    ax0.axhline(100 * min_share, color="#999999", linewidth=1, linestyle=":")
    ax0.set(xlabel="retrofit step", ylabel="smallest layer's share of the MLP output (%) ↑",
            title="Does the memory carry signal?")
    ax1.axhline(0, color="#999999", linewidth=1, linestyle=":")
    ax1.set(xlabel="retrofit step", ylabel="held-out reply loss change (nats) ↓", title="Does it help general text?")
    for ax in (ax0, ax1):
        ax.xaxis.label.set_size(11)
        ax.yaxis.label.set_size(11)
        ax.tick_params(labelsize=10)
        ax.legend(fontsize=9.5, loc="upper left", bbox_to_anchor=(0, -0.16), ncol=2, frameon=False)
    if split:
        for f, _ in figs:
            f.tight_layout()
        return [f for f, _ in figs]
    fig.tight_layout()
    return fig


def plot_learning_by_share(table: pd.DataFrame, metric: str = "d_gold_margin"):
    """How much retrofit SMF needs (``smf_lib.study.pilot.learning_table``): SMF-KL's learning in a fixed
    number of steps on dev MedMCQA items, with its 95% interval, against the memory's share of the MLP's output at
    each retrofit checkpoint (labelled with its retrofit step).

    Returns:
        The figure.
    """
    fig, ax = plt.subplots(figsize=(7.2, 4.6))
    for lr, g in table.groupby("lr"):
        g = g.sort_values("share")
        colour = PALETTE.get("smf-kl", "#1b9e77")
        ax.errorbar(100 * g["share"], g[metric], yerr=[g[metric] - g[f"{metric}_lo"], g[f"{metric}_hi"] - g[metric]],
                    fmt="o-", color=colour, capsize=3, label=f"SMF-KL at {lr:g}")
        for r in g.itertuples():
            ax.annotate(f"step {r.retrofit_step}", (100 * r.share, getattr(r, metric)), textcoords="offset points",
                        xytext=(6, 6), fontsize=9.5)
    ax.axhline(0, color="#999999", linewidth=1, linestyle=":")
    what = {"d_gold_margin": "gold margin (nats)", "d_gold_prob": "gold probability", "d_acc": "accuracy"}.get(
        metric, metric)
    ax.set_xlabel("memory's mean share of the MLP output after the retrofit (%)", fontsize=11)
    ax.set_ylabel(f"change in {what} ↑", fontsize=11)
    ax.set_title("SMF-KL's learning on dev items, by retrofit checkpoint", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.legend(fontsize=10, loc="upper left", bbox_to_anchor=(0, -0.16), frameon=False)
    fig.tight_layout()
    return fig


__all__ = ["FOOTPRINT_GOAL", "OVERLAP_GOAL", "MAX_TOP5_SHARE", "spread_after", "plot_spread", "plot_sizes",
           "plot_memory_effect", "plot_retrofit_pilot", "plot_learning_by_share"]
