"""Paired statistics over probe items and the results summary (``summary.csv``)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

# metric -> (item arrays it is computed from, how the metric is computed from them)
METRICS = {
    "medmcqa_acc": (("medmcqa_correct",), lambda a: a[0].mean(axis=-1)),
    "medmcqa_gold_loglik": (("medmcqa_gold_loglik",), lambda a: a[0].mean(axis=-1)),
    "wikitext_ppl": (("wikitext_window_nll", "wikitext_window_tokens"),
                     lambda a: np.exp(a[0].sum(axis=-1) / a[1].sum(axis=-1))),
    "triviaqa_acc": (("triviaqa_correct",), lambda a: a[0].mean(axis=-1)),
    "triviaqa_alias_loglik": (("triviaqa_alias_loglik",), lambda a: a[0].mean(axis=-1)),
}


def paired_bootstrap(base: dict, other: dict, metric: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Delta ``other - base`` of a metric with a paired-bootstrap 95% interval (same resampled items).

    Args:
        base, other: the ``items`` dicts of two runs on the same probe items.
        metric: a key of ``METRICS``.

    Returns:
        ``{"delta", "lo", "hi", "p_le_0"}``: p_le_0 is the bootstrap share of deltas <= 0.
    """
    keys, fn = METRICS[metric]
    a = [np.asarray(base[k], dtype=float) for k in keys]
    b = [np.asarray(other[k], dtype=float) for k in keys]
    if any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError(f"{metric}: runs were evaluated on different items; paired statistics need the same items")
    n = a[0].shape[0]
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    deltas = fn([y[idx] for y in b]) - fn([x[idx] for x in a])
    return {"delta": float(fn(b) - fn(a)), "lo": float(np.percentile(deltas, 2.5)),
            "hi": float(np.percentile(deltas, 97.5)), "p_le_0": float((deltas <= 0).mean())}


def mcnemar(base_correct, other_correct) -> dict:
    """Exact two-sided McNemar test on paired 0/1 outcomes."""
    a, b = np.asarray(base_correct), np.asarray(other_correct)
    n01, n10 = int(((a == 0) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())
    n = n01 + n10
    k = min(n01, n10)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"gained": n01, "lost": n10, "p": p}


def load_runs(out: str | Path) -> list[dict]:
    """All run JSONs under ``out/runs``."""
    return [json.loads(f.read_text()) for f in sorted(Path(out).glob("runs/*.json"))]


def summary_table(runs: list[dict]) -> pd.DataFrame:
    """One row per method and seed: metrics, deltas to base and paired-bootstrap 95% intervals."""
    base = next((r for r in runs if r["method"] == "base"), None)
    rows = []
    for r in runs:
        cfg = r.get("train_config") or {}
        row = {"method": r["method"], "selector": cfg.get("selector", "") if cfg.get("method") == "smf" else "",
               "seed": r["seed"] if r["method"] != "base" else "", **r["metrics"],
               "train_seconds": round(r.get("train_seconds", 0.0), 1),
               "wall_seconds": round(r.get("wall_seconds", 0), 1)}
        if base is not None:
            for m in METRICS:
                ci = paired_bootstrap(base["items"], r["items"], m)
                row[f"d_{m}"], row[f"d_{m}_lo"], row[f"d_{m}_hi"] = ci["delta"], ci["lo"], ci["hi"]
            row["medmcqa_mcnemar_p"] = mcnemar(base["items"]["medmcqa_correct"], r["items"]["medmcqa_correct"])["p"]
        rows.append(row)
    order = {m: i for i, m in enumerate(["base", "retrofit", "smf-kl", "smf-tfidf", "smf-kl-seedmode", "lora", "full"])}
    df = pd.DataFrame(rows)
    if len(df):
        df = df.sort_values(["method", "seed"], key=lambda s: s.map(order).fillna(99) if s.name == "method" else s)
    return df.reset_index(drop=True)


def write_summary(out: str | Path) -> Path:
    """Write ``out/summary.csv`` atomically from the run files."""
    out = Path(out)
    path = out / "summary.csv"
    tmp = out / "summary.csv.tmp"
    summary_table(load_runs(out)).to_csv(tmp, index=False, float_format="%.6g")
    tmp.replace(path)
    return path


def verdicts(summary: pd.DataFrame) -> pd.DataFrame:
    """Per method, what the paired 95% intervals support: learned the task (MedMCQA accuracy or gold-option
    log-likelihood up), forgot (WikiText perplexity up, TriviaQA alias log-likelihood down), or neither."""

    def sign(row, metric, worse_if_up):
        lo, hi = row[f"d_{metric}_lo"], row[f"d_{metric}_hi"]
        if lo > 0:
            return "worse" if worse_if_up else "better"
        if hi < 0:
            return "better" if worse_if_up else "worse"
        return "no clear change"

    rows = []
    for _, r in summary[summary["method"] != "base"].iterrows():
        rows.append({"method": r["method"],
                     "MedMCQA accuracy": sign(r, "medmcqa_acc", False),
                     "MedMCQA gold log-lik": sign(r, "medmcqa_gold_loglik", False),
                     "WikiText perplexity": sign(r, "wikitext_ppl", True),
                     "TriviaQA alias log-lik": sign(r, "triviaqa_alias_loglik", False)})
    return pd.DataFrame(rows)


def benchmark_targets(steps: pd.DataFrame, slots: pd.DataFrame | None = None, gpu: bool = False) -> pd.DataFrame:
    """Issue 5's speed and memory targets, checked on a benchmark's tables (``benchmarks/bench_steps.py``).

    Args:
        steps: ``{target}_steps.csv`` (one row per method: median_step_s, peak_mem_mb).
        slots: ``{target}_slots.csv`` (n_slots, median_step_s and, when present, run, allocator and
            unused_tensor_mb; one verdict per run and allocator; rows with an unused tensor are a control and
            are left out here).
        gpu: whether the tables come from a GPU (the forward-overhead goal is stated for GPU only).

    Returns:
        A table with one row per target, giving what was measured, the goal, and whether it holds (yes / no /
        not measured / reported).
    """
    t = steps.set_index("method")
    rows = []

    def add(name, value, goal, holds):
        rows.append({"target": name, "measured": value, "goal": goal,
                     "holds": "not measured" if holds is None else ("yes" if holds else "no")})

    def ratio(a, b, col="median_step_s"):
        return float(t.loc[a, col] / t.loc[b, col]) if a in t.index and b in t.index else None

    for smf in ("smf-kl", "smf-tfidf"):
        r = ratio(smf, "lora")
        add(f"{smf} step / LoRA step", None if r is None else round(r, 3), "<= 1", None if r is None else r <= 1)
        r = ratio(smf, "smf-floor")
        add(f"{smf} step / SMF floor", None if r is None else round(r, 3), "<= 1.15",
            None if r is None else r <= 1.15)
    r = ratio("smf-kl", "lora", "peak_mem_mb")
    add("smf-kl peak memory / LoRA peak", None if r is None else round(r, 3), "< 1", None if r is None else r < 1)
    if slots is not None and "unused_tensor_mb" in slots:
        slots = slots[slots["unused_tensor_mb"] == 0]  # the control rows (an unused tensor beside) are not a size
    if slots is not None and len(slots):
        keys = [k for k in ("run", "allocator") if k in slots]
        groups = slots.groupby(keys, sort=False) if keys else [((), slots)]
        for key, g in groups:
            g = g.sort_values("n_slots")
            r = float(g["median_step_s"].max() / g["median_step_s"].iloc[0])
            what = ", ".join(str(k) for k in (key if isinstance(key, tuple) else (key,)))
            label = (f"slot scaling{' (' + what + ')' if what else ''}: slowest step / "
                     f"{int(g['n_slots'].iloc[0]):,}-slot step, up to {int(g['n_slots'].max()):,} slots")
            add(label, round(r, 3), "<= 1.2", r <= 1.2)
    r = ratio("memory-forward", "base-forward")
    add("memory forward / base forward", None if r is None else round(r, 3),
        "<= 1.10 (goal on GPU)", None if r is None or not gpu else r <= 1.10)
    if not gpu and r is not None:
        rows[-1]["holds"] = "reported (goal is for GPU)"
    return pd.DataFrame(rows)
