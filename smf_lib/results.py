"""Result files of a grid and the tables the book reads.

``OUT/runs/NAME.json`` holds one finished run (written last, atomically: its presence means the run is
complete). ``OUT/summary.csv`` has one row per fully evaluated run: metrics, deltas to base with
paired-bootstrap 95% intervals, and flags. ``OUT/trajectories.csv`` has the cheap dev probes along every run.
Neither table holds timings, so an interrupted and resumed grid writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .files import atomic_write, read_json
from .methods import order_key
from .paired_stats import METRICS, mcnemar, paired_bootstrap


def results_dir(name: str = "cpu", start: str | Path | None = None) -> Path:
    """``results/NAME`` of the checkout that contains ``start`` (default: the working directory)."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "results" / name).is_dir():
            return p / "results" / name
    raise FileNotFoundError(f"no results/{name} above {here}: run the notebook from a clone of the repository, "
                            f"or make the results with `python -m smf_lib run --preset {name}`")


def load_runs(out: str | Path) -> list[dict]:
    """All finished run records under ``out/runs`` (a damaged file raises an error naming it)."""
    return [read_json(f) for f in sorted(Path(out).glob("runs/*.json"))]


def load_results(name: str = "cpu", start: str | Path | None = None):
    """The summary table and run records of the committed ``results/NAME`` (nothing is computed).

    Returns:
        ``(folder, summary DataFrame, list of run dicts)``.
    """
    out = results_dir(name, start)
    runs = load_runs(out)
    return out, summary_table(runs), runs


def _base_for(run: dict, runs: list[dict]) -> dict | None:
    return next((r for r in runs if r["method"] == "base" and r.get("split") == run.get("split")
                 and r.get("evaluation") == run.get("evaluation")), None)


def paired_row(base: dict | None, run: dict) -> dict:
    """Deltas to base with 95% paired intervals for every metric both runs have items for."""
    row = {}
    if base is None:
        return row
    for m, (keys, *_rest) in METRICS.items():
        if all(k in base["items"] and k in run["items"] for k in keys):
            ci = paired_bootstrap(base["items"], run["items"], m)
            row[f"d_{m}"], row[f"d_{m}_lo"], row[f"d_{m}_hi"] = ci["delta"], ci["lo"], ci["hi"]
    if "medmcqa_correct" in run["items"] and "medmcqa_correct" in base["items"]:
        row["medmcqa_mcnemar_p"] = mcnemar(base["items"]["medmcqa_correct"], run["items"]["medmcqa_correct"])["p"]
    return row


def summary_table(runs: list[dict]) -> pd.DataFrame:
    """One row per fully evaluated run: metrics, deltas to base, paired-bootstrap 95% intervals and flags."""
    rows = []
    for r in runs:
        if r.get("evaluation", "full") != "full":
            continue
        cfg = r.get("train_config") or {}
        row = {"method": r["method"], "seed": r["seed"] if r["method"] != "base" else "",
               "lr": cfg.get("lr", ""), "split": r.get("split", "report"), "flags": " ".join(r.get("flags", [])),
               **{k: v for k, v in r["metrics"].items()}}
        row.update(paired_row(_base_for(r, runs), r))
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.assign(_o=df["method"].map(order_key), _s=df["seed"].astype(str), _l=df["lr"].astype(str))
        df = df.sort_values(["split", "_o", "_l", "_s"]).drop(columns=["_o", "_s", "_l"])
    return df.reset_index(drop=True)


def trajectory_table(runs: list[dict]) -> pd.DataFrame:
    """One row per run and probe point: the cheap dev probes along training, with deltas to the base model's
    cheap scores (paired on the same items)."""
    base = next((r for r in runs if r["method"] == "base" and r.get("cheap")), None)
    rows = []
    for r in runs:
        cfg = r.get("train_config") or {}
        for point in r.get("trajectory", []):
            row = {"method": r["method"], "seed": r["seed"], "lr": cfg.get("lr", ""), "step": point["step"],
                   "steps": len(r.get("train_log", [])), **point["metrics"]}
            if base is not None:
                row.update(paired_row({"items": base["cheap"]}, {"items": point["items"]}))
            rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.assign(_o=df["method"].map(order_key)).sort_values(["_o", "lr", "seed", "step"]).drop(columns="_o")
    return df.reset_index(drop=True)


def seed_spread(summary: pd.DataFrame, metrics=("d_medmcqa_acc", "d_chat_drift_kl", "d_wikitext_drift_kl")):
    """Per method and rate: the mean over seeds, the spread across seeds (min, max) and the seed count."""
    df = summary[summary["method"] != "base"]
    rows = []
    for (method, lr), g in df.groupby(["method", "lr"], sort=False):
        row = {"method": method, "lr": lr, "seeds": len(g)}
        for m in metrics:
            if m in g:
                row[f"{m}_mean"], row[f"{m}_min"], row[f"{m}_max"] = g[m].mean(), g[m].min(), g[m].max()
        rows.append(row)
    return pd.DataFrame(rows)


def verdicts(summary: pd.DataFrame) -> pd.DataFrame:
    """Per run, what the paired 95% intervals support for each metric: ``better``, ``worse`` or
    ``no clear change`` (better means more learning, or less forgetting)."""
    rows = []
    for _, r in summary[summary["method"] != "base"].iterrows():
        row = {"method": r["method"], "seed": r["seed"]}
        for m, (_, _, sign, _) in METRICS.items():
            lo, hi = r.get(f"d_{m}_lo"), r.get(f"d_{m}_hi")
            if lo is None or hi is None or (isinstance(lo, float) and np.isnan(lo)):
                continue
            up = "better" if sign > 0 else "worse"
            down = "worse" if sign > 0 else "better"
            row[m] = up if lo > 0 else down if hi < 0 else "no clear change"
        rows.append(row)
    return pd.DataFrame(rows)


def write_summary(out: str | Path) -> Path:
    """Write ``out/summary.csv`` and ``out/trajectories.csv`` atomically from the run files."""
    out = Path(out)
    runs = load_runs(out)
    atomic_write(out / "trajectories.csv", trajectory_table(runs).to_csv(index=False, float_format="%.6g"))
    return atomic_write(out / "summary.csv", summary_table(runs).to_csv(index=False, float_format="%.6g"))
