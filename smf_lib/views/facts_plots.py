"""The new-facts chapter's figures and tables, from ``results/facts`` (run records, the start's scores and the rows
snapshot ``fact_rows.json``)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from ..selection import score_rows, select_rows
from ..study.arms import PALETTE
from ..study.facts_frontier import ARM_LABELS, FORGETTING, LEARN, MEASURES, frontier_table
from .diagrams import plot_selection_steps
from .plotting import outside_legend

#: Line styles: the project's row-sparse Adam solid, plain SGD (Lin et al.'s update) dashed.
_SELECTORS = {"tfidf": "TF-IDF", "kl": "KL"}
_STYLE = {"smf-tfidf-sgd": "--", "smf-kl-sgd": "--"}
_COLOUR = {**PALETTE, "smf-tfidf-sgd": PALETTE["smf-tfidf"], "smf-kl-sgd": PALETTE["smf-kl"]}


def fact_counts(snapshot: dict, k: int = 0) -> torch.Tensor:
    """The ``k``-th fact's read counts over the snapshot's layer, as an (N,) tensor."""
    counts = torch.zeros(snapshot["n_slots"], dtype=torch.long)
    fact = snapshot["facts"][k]
    counts[torch.tensor(fact["rows"], dtype=torch.long)] = torch.tensor(fact["reads"], dtype=torch.long)
    return counts


def fact_selection(snapshot: dict, k: int = 0, selector: str = "tfidf") -> torch.Tensor:
    """The rows SMF trains for the ``k``-th fact's batch at the snapshot's top-t (by ``selector``)."""
    c = fact_counts(snapshot, k)
    df, totals = torch.tensor(snapshot["df"]), torch.tensor(snapshot["totals"])
    score = score_rows(c, selector, df=df, totals=totals, n_docs=snapshot["n_docs"])
    return select_rows(c, score, snapshot["top_t"])


def plot_fact_rows(snapshot: dict, k: int = 0, selector: str = "tfidf", rows: int = 24):
    """One fact's rows, step by step (:func:`smf_lib.views.diagrams.plot_selection_steps`): the rows its phrasings
    read most, how much general text reads them, the selector's score and the top-t SMF trains."""
    return plot_selection_steps(fact_counts(snapshot, k), torch.tensor(snapshot["df"]),
                                torch.tensor(snapshot["totals"]), snapshot["n_docs"], snapshot["top_t"], rows=rows,
                                selector=selector)


def rows_sentence(snapshot: dict, k: int = 0, selector: str = "tfidf", rows: int = 24, hub_share: float = 0.5) -> str:
    """What :func:`plot_fact_rows` shows, in words computed from the snapshot: how many of the ``k``-th fact's
    ``rows`` most-read rows are hubs (read by more than ``hub_share`` of the general documents), how many of them
    the selector trains, and how many hubs its whole top-t holds."""
    c = fact_counts(snapshot, k)
    top = set(torch.argsort(c, descending=True, stable=True)[:rows].tolist())
    df = np.asarray(snapshot["df"]) / snapshot["n_docs"]
    chosen = set(fact_selection(snapshot, k, selector).tolist())
    name, hubs = _SELECTORS.get(selector, selector), sum(df[i] > hub_share for i in chosen)
    return (f"Of the {rows} rows this fact's batch reads most, {sum(df[i] > hub_share for i in top)} are hubs, read "
            f"by more than {hub_share:.0%} of the general paragraphs (panel 2's dots). {name} trains "
            f"{len(chosen & top)} of those {rows}; the rest of its {snapshot['top_t']} rows come from further down the "
            f"fact's reads, and they hold {hubs} hub{'' if hubs == 1 else 's'} in all.")


def rows_table(snapshot: dict, selectors=("tfidf", "kl"), hub_share: float = 0.5) -> pd.DataFrame:
    """Per fact of the snapshot: rows read, and per selector the rows it trains, how many of them general text
    reads in more than ``hub_share`` of documents (hubs, as the book's hub rows), and how many the next fact's
    selection shares."""
    df = np.asarray(snapshot["df"]) / snapshot["n_docs"]
    picks = {s: [set(fact_selection(snapshot, k, s).tolist()) for k in range(len(snapshot["facts"]))]
             for s in selectors}
    rows = []
    for k, fact in enumerate(snapshot["facts"]):
        row = {"fact": f"{fact['entity']}: {fact['answer']}", "rows read": len(fact["rows"])}
        for s in selectors:
            chosen = picks[s][k]
            name = _SELECTORS.get(s, s)
            row[f"{name}: hubs among its {snapshot['top_t']} rows"] = sum(df[i] > hub_share for i in chosen)
            row[f"{name}: shared with the next fact"] = (len(chosen & picks[s][k + 1]) if k + 1 < len(snapshot["facts"])
                                                      else "—")
        rows.append(row)
    return pd.DataFrame(rows)


def _clipped(xs, ys, xmax: float) -> tuple[list[float], list[float], list[int]]:
    """A line cut to x <= ``xmax``: its points there, the point where each segment leaves or re-enters the window
    (NaN between, so nothing is drawn outside it), and the indices of the real points, which carry markers."""
    cx, cy, real = [], [], []

    def cross(x0, y0, x1, y1):
        return y0 + (y1 - y0) * (xmax - x0) / (x1 - x0)

    for k, (x, y) in enumerate(zip(xs, ys)):
        if k and (xs[k - 1] <= xmax) != (x <= xmax):  # the segment from the last point crosses the edge
            cx.append(xmax)
            cy.append(cross(xs[k - 1], ys[k - 1], x, y))
            if x > xmax:
                cx.append(float("nan"))
                cy.append(float("nan"))
        if x <= xmax:
            real.append(len(cx))
            cx.append(x)
            cy.append(y)
    return cx, cy, real


def plot_facts_frontier(runs: list[dict], start: dict, probes=FORGETTING, level: float | None = None,
                        title: str | None = None, xmax: float | None = None):
    """Learning (x: the facts' answer log-likelihood change) against each forgetting probe's change (y), one line
    per arm through the start and its rates (mean over seeds), the comparison's level marked (dotted); ``title``
    over the first panel. ``xmax`` zooms in on learning up to it (each panel's y range fitted to what the lines do
    there), where a run far to the right would squeeze the region around the level. Returns the figure, one panel
    per probe, one below the other."""
    table = frontier_table(runs, start)
    fig, axes = plt.subplots(len(probes), 1, figsize=(6.6, 3.0 * len(probes)), squeeze=False)
    for ax, probe in zip(axes[:, 0], probes):
        seen = [0.0]
        for arm, g in table.groupby("arm", sort=False):
            if probe not in g:
                continue
            g = g.sort_values("lr")
            xs, ys = [0.0, *g[LEARN]], [0.0, *g[probe]]
            marks = list(range(len(xs)))
            if xmax is not None:  # only what lies in the window is drawn (nothing under the legend beside it)
                xs, ys, marks = _clipped(xs, ys, xmax)
                seen += [y for y in ys if y == y]
            ax.plot(xs, ys, ls=_STYLE.get(arm, "-"), marker="o", ms=4, markevery=marks, color=_COLOUR.get(arm, "k"),
                    label=ARM_LABELS.get(arm, arm))
        if xmax is not None:
            pad = 0.08 * ((max(seen) - min(seen)) or 1e-3)
            ax.set_xlim(-0.03 * xmax, xmax)
            ax.set_ylim(min(seen) - pad, max(seen) + pad)
        if level is not None:
            ax.axvline(level, ls=":", color="0.3")
        ax.axhline(0, color="0.7", lw=0.8)
        sign, label = MEASURES[probe]
        ax.set_ylabel(f"{label.split(' (')[0]}\nchange ({'up' if sign > 0 else 'down'} is better)")
        if ax is axes[0, 0]:
            outside_legend(ax, title="arm (dashed: plain SGD;\ndotted line: equal learning)")
            if title:
                ax.set_title(title, loc="left")
    axes[-1, 0].set_xlabel("learning: the facts' answer log-lik gain, nats per token (right is more)")
    fig.tight_layout()
    return fig


def example_table(runs: list[dict], start: dict, per_fact: int, fact: int = 0) -> pd.DataFrame:
    """One fact (the chapter's running example) after every run: its answer log-likelihood (mean over its
    ``per_fact`` held-out questions, which the facts probe lists together, nats per token) and how many of them are
    answered exactly, beside the start's."""
    part = slice(fact * per_fact, (fact + 1) * per_fact)

    def row(arm, lr, seed, s):
        return {"arm": arm, "lr": lr, "seed": seed, "answer log-lik": float(np.mean(s["facts_loglik"][part])),
                "exact": f"{sum(s['facts_em'][part])} of {per_fact}"}

    order = list(ARM_LABELS)
    ranked = sorted(runs, key=lambda r: (order.index(r["arm"]) if r["arm"] in order else len(order), r["lr"],
                                         r["seed"]))
    return pd.DataFrame([row("start", "—", "—", start)]
                        + [row(ARM_LABELS.get(r["arm"], r["arm"]), r["lr"], r["seed"], r["scores"]) for r in ranked])
