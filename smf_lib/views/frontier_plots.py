"""The frontier figure of a MedMCQA study: each probe's change against dev learning, one line per arm, read along
the trajectories at equal learning (:mod:`smf_lib.study.frontier`), the comparison's level marked."""

from __future__ import annotations

import matplotlib.pyplot as plt

from .plotting import plot_equal_learning

#: The probes the frontier figure shows, one panel each.
FRONTIER_PROBES = ("chat_loglik", "chat_drift_kl", "wikitext_drift_kl", "acquisition_gold_margin")
#: Each probe's name on a panel's y axis, short enough for a stacked figure's left margin.
PANEL_LABELS = {"chat_loglik": "held-out chat log-lik", "chat_drift_kl": "drift on chat (KL)",
                "wikitext_drift_kl": "drift on WikiText (KL)",
                "acquisition_gold_margin": "trained questions'\ngold margin", "medmcqa_gold_margin": "dev gold margin"}


def plot_frontier_panels(runs: list[dict], arms, level: float | None = None, probes=FRONTIER_PROBES, seeds=(0, 1),
                         title: str | None = None):
    """One panel per probe, one below the other (drawn large: the chapter's main figure): each arm's change in
    the probe at each level of dev learning (:func:`~smf_lib.views.plotting.plot_equal_learning`), the level
    marked; the legend once, beside the first panel. Returns the figure."""
    fig, axes = plt.subplots(len(probes), 1, figsize=(7.2, 3.1 * len(probes)), squeeze=False, sharex=True)
    for i, (ax, probe) in enumerate(zip(axes[:, 0], probes)):
        plot_equal_learning(runs, arms, seeds, probe, level, ax=ax, legend=i == 0)  # legend and label once
        better = ax.get_ylabel().rsplit("\n", 1)[-1]  # "(up is better)"
        ax.set_ylabel(f"{PANEL_LABELS.get(probe, probe)} change\n{better}")
        if i < len(probes) - 1:
            ax.set_xlabel("")
    if title:
        axes[0, 0].set_title(title, loc="left")
    fig.tight_layout()
    fig.align_ylabels(axes[:, 0])
    return fig
