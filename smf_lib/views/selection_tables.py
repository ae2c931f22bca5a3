"""Tables of which rows the selectors pick, read from the selection snapshot (``selection_counts.json``, written by
``python -m smf_lib snapshot``): what chapter 4 and its widgets show. They compute; :mod:`smf_lib.views.plotting`
draws."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import torch

from ..selection import BackgroundStats, layer_stats, score_rows, select_for_layers, select_rows


def load_snapshot(path: str | Path) -> tuple[list[torch.Tensor], BackgroundStats, dict]:
    """Read ``selection_counts.json``: per-layer task read counts, background statistics and metadata."""
    snap = json.loads(Path(path).read_text())
    counts = [torch.tensor(c) for c in snap["batch_counts"]]
    stats = BackgroundStats(torch.tensor(snap["df"]), torch.tensor(snap["totals"]), snap["n_docs"], "snapshot")
    return counts, stats, snap


def selection_overlap(counts, stats, ts, layers=None) -> pd.DataFrame:
    """Per layer and top-t: rows KL and TF-IDF select, their Jaccard overlap and their share of hub rows
    (rows that more than half of the background documents read)."""
    rows = []
    for t in ts:
        kl = select_for_layers(counts, "kl", t, stats)
        tf = select_for_layers(counts, "tfidf", t, stats)
        for j, (a, b) in enumerate(zip(kl, tf)):
            sa, sb = set(a.tolist()), set(b.tolist())
            hub = stats.df[j] > stats.n_docs / 2
            rows.append({"layer": j if layers is None else layers[j], "top_t": t,
                         "jaccard": len(sa & sb) / max(1, len(sa | sb)),
                         "kl_hub_share": float(hub[a].float().mean()) if len(a) else 0.0,
                         "tfidf_hub_share": float(hub[b].float().mean()) if len(b) else 0.0})
    return pd.DataFrame(rows)


def example_selection(example, batch, stats, top_t: int, layers=None) -> pd.DataFrame:
    """Whether the selectors pick one question's rows, per memory layer: the rows it reads; of them, how many KL and
    TF-IDF would train were it a batch by itself (top-t of its own reads), with the share of its reads those rows
    carry and how many are hub rows; and how many of its rows are among those each selector picks for the
    training ``batch`` (the snapshot's task reads).

    Args:
        example, batch: per-layer read counts (tensors of N slots) of the question and of the training batch.
        stats: the background statistics (:class:`~smf_lib.selection.BackgroundStats`).
    """
    own = {s: select_for_layers(example, s, top_t, stats) for s in ("kl", "tfidf")}
    task = {s: select_for_layers(batch, s, top_t, stats) for s in ("kl", "tfidf")}
    rows = []
    for j, c in enumerate(example):
        read = c > 0
        hub = stats.df[j] > stats.n_docs / 2
        row = {"layer": j if layers is None else layers[j], "rows read": int(read.sum())}
        for s, name in (("kl", "KL"), ("tfidf", "TF-IDF")):
            picked = own[s][j]
            row[f"{name} picks"] = len(picked)
            row[f"{name} share of its reads"] = float(c[picked].sum() / c.sum())
            row[f"{name} hub rows"] = int(hub[picked].sum())
            row[f"in {name}'s batch picks"] = int(read[task[s][j]].sum())
        row["picked by both"] = len(set(own["kl"][j].tolist()) & set(own["tfidf"][j].tolist()))
        rows.append(row)
    return pd.DataFrame(rows)


def scores_table(counts, stats, layer: int, top_t: int) -> pd.DataFrame:
    """The top rows of a layer under each selector, side by side (rank, slot, score)."""
    out = {}
    for sel in ("kl", "tfidf", "tf"):
        s = score_rows(counts[layer], sel, **layer_stats(stats, layer))
        chosen = select_rows(counts[layer], s, top_t)
        out[f"{sel} slot"] = chosen.tolist()
        out[f"{sel} score"] = s[chosen].round(decimals=5).tolist()
    return pd.DataFrame(out)
