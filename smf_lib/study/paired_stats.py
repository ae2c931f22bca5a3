"""Paired statistics over probe items: the metrics computed from per-item arrays, paired-bootstrap intervals and
McNemar's test. Two runs are compared on the same items, so item difficulty cancels out."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from ..probes import metrics as probe_metrics


def metric_table() -> dict:
    """metric -> (item arrays it is computed from, how it is computed from them, +1 if higher is better else -1,
    what it measures), read from the probe registry (:data:`smf_lib.probes.PROBES`) each time, so a probe added
    there is compared too."""
    return {name: (m.items, m.compute, m.better, m.kind) for name, m in probe_metrics().items()}


class _MetricView(Mapping):
    """:func:`metric_table` as a read-only mapping that follows the registry (a probe added later is included)."""

    def __getitem__(self, key):
        return metric_table()[key]

    def __iter__(self):
        return iter(metric_table())

    def __len__(self):
        return len(metric_table())


METRICS = _MetricView()

#: Two arms' dev learning within this many nats of MedMCQA gold margin counts as matched (stated before the runs;
#: :mod:`smf_lib.study.frontier` applies it).
MATCH_MARGIN = 0.02


def paired_bootstrap(base: dict, other: dict, metric: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """Delta ``other - base`` of a metric with a paired-bootstrap 95% interval (same resampled items).

    Args:
        base, other: the ``items`` dicts of two runs on the same probe items.
        metric: a key of ``METRICS``.

    Returns:
        ``{"delta", "lo", "hi", "p_le_0"}``: p_le_0 is the bootstrap share of deltas <= 0.
    """
    keys, fn = METRICS[metric][:2]
    a = [np.asarray(base[k], dtype=float) for k in keys]
    b = [np.asarray(other[k], dtype=float) for k in keys]
    if any(x.shape != y.shape for x, y in zip(a, b)):
        raise ValueError(f"{metric}: runs were evaluated on different items; paired statistics need the same items")
    n = a[0].shape[0]
    if n == 0:
        raise ValueError(f"{metric}: no items to compare")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    deltas = fn([y[idx] for y in b]) - fn([x[idx] for x in a])
    return {"delta": float(fn(b) - fn(a)), "lo": float(np.percentile(deltas, 2.5)),
            "hi": float(np.percentile(deltas, 97.5)), "p_le_0": float((deltas <= 0).mean())}


def pooled_bootstrap(pairs: list[tuple[dict, dict]], metric: str, n_boot: int = 2000, seed: int = 0) -> dict:
    """:func:`paired_bootstrap` pooled over seeds: ``pairs`` holds one ``(base items, other items)`` per seed, all
    on the same items; the difference is the mean of the seeds' differences, and each bootstrap draw resamples the
    same items for every seed. Returns ``{"delta", "lo", "hi", "per_seed"}`` (``per_seed``: each seed's own
    difference, for :func:`seed_verdict`)."""
    keys, fn = METRICS[metric][:2]
    arrays = [([np.asarray(a[k], dtype=float) for k in keys], [np.asarray(b[k], dtype=float) for k in keys])
              for a, b in pairs]
    n = arrays[0][0][0].shape[0]
    if n == 0 or any(x.shape != (n,) for a, b in arrays for x in (*a, *b)):
        raise ValueError(f"{metric}: runs were evaluated on different items; paired statistics need the same items")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    per_seed = [float(fn(b) - fn(a)) for a, b in arrays]
    deltas = np.mean([fn([y[idx] for y in b]) - fn([x[idx] for x in a]) for a, b in arrays], axis=0)
    return {"delta": float(np.mean(per_seed)), "lo": float(np.percentile(deltas, 2.5)),
            "hi": float(np.percentile(deltas, 97.5)), "per_seed": per_seed}


def mcnemar(base_correct, other_correct) -> dict:
    """Exact two-sided McNemar test on paired 0/1 outcomes."""
    a, b = np.asarray(base_correct), np.asarray(other_correct)
    if a.shape != b.shape:
        raise ValueError(f"mcnemar: {len(a)} and {len(b)} outcomes; the two runs were scored on different items, and "
                         "a paired test needs the same items (compare reported runs, not a swept run scored on its "
                         "dev subset)")
    n01, n10 = int(((a == 0) & (b == 1)).sum()), int(((a == 1) & (b == 0)).sum())
    n = n01 + n10
    k = min(n01, n10)
    p = min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n) if n else 1.0
    return {"gained": n01, "lost": n10, "p": p}


def mcnemar_words(test: dict, who: str, against: str) -> str:
    """A McNemar result in words, with its direction: ``who`` got ``gained`` answers newly right and ``lost`` newly
    wrong against ``against``, and whether that differs at p < 0.05 (better or worse) or cannot be told."""
    counts = f"{test['gained']} answers newly right and {test['lost']} newly wrong against {against}"
    if test["p"] >= 0.05:
        return f"{who}: {counts}; no difference at p < 0.05 (p = {test['p']:.2g})"
    side = "better" if test["gained"] > test["lost"] else "worse"
    return f"{who}: {counts}: {side} at p = {test['p']:.2g}"


def item_interval(d: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The 95% bootstrap interval of the mean of per-item differences ``d`` (resampling items)."""
    idx = np.random.default_rng(seed).integers(0, len(d), size=(n_boot, len(d)))
    boot = d[idx].mean(axis=1)
    return float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))


def verdict(lo: float, hi: float, better: int) -> str:
    """``better`` / ``worse`` when the interval of a difference excludes 0 (``better``: +1 if up is better for the
    probe, -1 if down is), else ``cannot tell``."""
    if lo > 0 or hi < 0:
        return "better" if (lo > 0) == (better > 0) else "worse"
    return "cannot tell"


def seed_verdict(lo: float, hi: float, better: int, per_seed) -> str:
    """:func:`verdict` for a difference averaged over seeds, whose interval is over items only: better or worse
    only when, besides the interval excluding 0, every seed's own difference (``per_seed``, one mean per seed) has
    the pooled difference's sign; else ``cannot tell`` (two seeds cannot give an interval over seeds)."""
    said = verdict(lo, hi, better)
    if said == "cannot tell":
        return said
    sign = 1 if lo > 0 else -1
    return said if all(float(x) * sign > 0 for x in per_seed) else "cannot tell"


def common_level(ends) -> dict:
    """The overlap of the arms' ranges of final dev learning (a DataFrame with ``arm`` and ``learning``, e.g.
    :func:`~smf_lib.study.frontier.final_learning`) and its midpoint, the level
    the comparison reads; ``level`` is None when the ranges do not overlap (some arm's rates do not bracket the
    others': widen its sweep)."""
    if ends.empty:
        return {"lo": None, "hi": None, "level": None}
    ranges = ends.groupby("arm")["learning"].agg(["min", "max"])
    lo, hi = float(ranges["min"].max()), float(ranges["max"].min())
    return {"lo": lo, "hi": hi, "level": (lo + hi) / 2 if lo < hi else None,
            "ranges": {a: (float(r["min"]), float(r["max"])) for a, r in ranges.iterrows()}}
