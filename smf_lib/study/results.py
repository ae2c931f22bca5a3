"""Result files of a grid and the tables the book reads.

``OUT/runs/NAME.json`` holds one finished run (written last, atomically: its presence means the run is
complete). ``OUT/summary.csv`` has one row per fully evaluated run: metrics, deltas to base with
paired-bootstrap 95% intervals, and flags. ``OUT/trajectories.csv`` has the dev-subset probes along every run.
Neither table holds timings, so an interrupted and resumed grid writes the same bytes as an uninterrupted one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..probes import metrics as probe_metrics
from ..files import atomic_write
from .arms import order_key
from .paired_stats import METRICS, mcnemar, paired_bootstrap, pooled_bootstrap, seed_verdict, verdict
from .records import is_report, read_run, without_repeats
from .tables import interval_cell, rate_label, seed_label


def results_dir(name: str = "cpu", start: str | Path | None = None) -> Path:
    """``results/NAME`` of the checkout that contains ``start`` (default: the working directory)."""
    here = Path(start or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if (p / "results" / name).is_dir():
            return p / "results" / name
    raise FileNotFoundError(f"no results/{name} above {here}: run the notebook from a clone of the repository, "
                            f"or make the results with `python -m smf_lib run --preset {name}`")


def load_runs(out: str | Path) -> list[dict]:
    """All finished run records under ``out/runs``. A damaged record (not JSON, a NaN or infinity, not an object,
    or missing ``method``, ``metrics`` or ``items``) raises an error naming its file."""
    return [read_run(f, ("method", "metrics", "items")) for f in sorted(Path(out).glob("runs/*.json"))]


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
        if not is_report(r):
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


def trajectory_table(runs: list[dict], against: str = "base") -> pd.DataFrame:
    """One row per run and probe point: the dev-subset probes along training, with paired deltas (on the same
    items) to the base model's dev-subset scores (``against="base"``) or to the run's own first point, the model it
    started from (``against="start"``: for an SMF run, the retrofitted model, so its deltas are net of the
    retrofit's)."""
    if against not in ("base", "start"):
        raise ValueError(f"against must be 'base' or 'start', got {against!r}")
    base = next((r for r in runs if r["method"] == "base" and r.get("dev_items")), None)
    rows = []
    for r in without_repeats(runs):  # a swept run that a grid run repeats counts once
        cfg = r.get("train_config") or {}
        points = r.get("trajectory", [])
        ref = {"items": base["dev_items"]} if against == "base" and base is not None else None
        if against == "start" and points:
            ref = {"items": points[0]["items"]}
        for point in points:
            row = {"method": r["method"], "seed": r["seed"], "lr": cfg.get("lr", ""), "step": point["step"],
                   "steps": len(r.get("train_log", [])), **point["metrics"]}
            if ref is not None:
                row.update(paired_row(ref, {"items": point["items"]}))
            rows.append(row)
    df = pd.DataFrame(rows, columns=None if rows else ["method", "seed", "lr", "step", "steps"])
    if len(df):
        df = df.assign(_o=df["method"].map(order_key)).sort_values(["_o", "lr", "seed", "step"]).drop(columns="_o")
    return df.reset_index(drop=True)


def start_run(run: dict, runs: list[dict]) -> dict | None:
    """The fully evaluated run of the model ``run`` started from: the retrofit of its seed for a method with a
    memory (SMF), the base model otherwise; None when that run has no record (yet)."""
    from .arms import get_arm

    want = "retrofit" if get_arm(run["method"]).memory is not None and run["method"] != "retrofit" else "base"
    return next((r for r in runs if r["method"] == want and is_report(r)
                 and r.get("split") == run.get("split") and (want == "base" or r["seed"] == run["seed"])), None)


def net_table(runs: list[dict]) -> pd.DataFrame:
    """One row per fully evaluated trained run: its change against the model it *started from* (the base model
    for LoRA and full finetuning, the retrofit of the same seed for SMF), paired on the reported items, with 95%
    intervals, so SMF's changes are read net of the retrofit's. A run whose start has no record yet is left
    out. Columns as in :func:`summary_table` (``d_METRIC``, ``d_METRIC_lo``, ``d_METRIC_hi``), plus ``start``."""
    rows = []
    for r in runs:
        if r["method"] in ("base",) or not is_report(r):
            continue
        start = start_run(r, runs)
        if start is None:
            continue
        cfg = r.get("train_config") or {}
        rows.append({"method": r["method"], "seed": r["seed"], "lr": cfg.get("lr", ""), "start": start["method"],
                     "split": r.get("split", "report"), **paired_row(start, r)})
    df = pd.DataFrame(rows, columns=None if rows else ["method", "seed", "lr", "start", "split"])
    if len(df):
        df = df.assign(_o=df["method"].map(order_key)).sort_values(["_o", "seed"]).drop(columns="_o")
    return df.reset_index(drop=True)


def pooled(table: pd.DataFrame, metrics: str | tuple[str, ...] = "d_medmcqa_gold_margin") -> pd.DataFrame:
    """One row per method and rate of a table with a row per run (:func:`net_table`, or the end points of a
    trajectory table): ``method``, ``lr``, ``seeds``, and for each of ``metrics`` (a column name or several) the
    mean over the seeds and the union of the seeds' intervals (from the lowest bound to the highest), as ``M``,
    ``M_lo``, ``M_hi``."""
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    cols = ["method", "lr", "seeds", *(c for m in metrics for c in (m, f"{m}_lo", f"{m}_hi"))]
    rows = [{"method": method, "lr": lr, "seeds": len(g),
             **{k: v for m in metrics for k, v in ((m, g[m].mean()), (f"{m}_lo", g[f"{m}_lo"].min()),
                                                  (f"{m}_hi", g[f"{m}_hi"].max()))}}
            for (method, lr), g in table.groupby(["method", "lr"], sort=False)]
    return pd.DataFrame(rows, columns=cols)


def end_points(traj: pd.DataFrame, metrics: str | tuple[str, ...] = "d_medmcqa_gold_margin") -> pd.DataFrame:
    """The last point of every run in a trajectory table, :func:`pooled` over seeds by method and rate."""
    return pooled(traj[traj["step"] == traj["steps"]], metrics)


def repeated_trainings(runs: list[dict]) -> pd.DataFrame:
    """Each swept run whose training a grid run repeats (the same identity but for how it was evaluated), next to
    that grid run: ``method``, ``seed``, ``lr``, ``steps``, ``same losses`` (every step's training loss equal) and
    ``largest difference`` between their losses. Equal losses show that the training is deterministic; unequal
    ones that the two records are not the same training."""
    from .records import training_of

    reported = {training_of(r): r for r in runs if is_report(r)}
    rows = []
    for r in runs:
        grid = None if is_report(r) else reported.get(training_of(r))
        if grid is None or not r.get("train_log") or not grid.get("train_log"):
            continue
        a, b = [e["loss"] for e in r["train_log"]], [e["loss"] for e in grid["train_log"]]
        diff = max((abs(x - y) for x, y in zip(a, b)), default=float("nan")) if len(a) == len(b) else float("inf")
        rows.append({"method": r["method"], "seed": r["seed"], "lr": (r.get("train_config") or {}).get("lr"),
                     "steps": len(a), "same losses": a == b, "largest difference": diff})
    return pd.DataFrame(rows, columns=["method", "seed", "lr", "steps", "same losses", "largest difference"])


def matched_learning(traj: pd.DataFrame, smf=("smf-kl", "smf-tfidf"), baselines=("lora", "full"),
                     learn: str = "d_medmcqa_gold_margin") -> pd.DataFrame:
    """Where SMF's learning meets the baselines': for each baseline's end point and each SMF method in ``traj``
    (a trajectory table, best with ``against="start"``), the SMF rate whose learning is closest to the baseline's,
    both learnings with their intervals, and whether the two intervals overlap (``matched``). This is how a
    preset's SMF rate is chosen on dev items (item by item, never on the reported ones)."""
    ends = end_points(traj, learn)
    rows = []
    for _, b in ends[ends["method"].isin(baselines)].iterrows():
        for method in smf:
            cand = ends[ends["method"] == method]
            if cand.empty:
                continue
            best = cand.loc[(cand[learn] - b[learn]).abs().idxmin()]
            rows.append({"baseline": b["method"], "baseline lr": b["lr"], "baseline learning": b[learn],
                         "baseline lo": b[f"{learn}_lo"], "baseline hi": b[f"{learn}_hi"], "smf": method,
                         "smf lr": best["lr"], "smf learning": best[learn], "smf lo": best[f"{learn}_lo"],
                         "smf hi": best[f"{learn}_hi"],
                         "matched": bool(best[f"{learn}_lo"] <= b[f"{learn}_hi"]
                                         and b[f"{learn}_lo"] <= best[f"{learn}_hi"]),
                         "rates tried": len(cand)})
    return pd.DataFrame(rows, columns=None if rows else ["baseline", "baseline lr", "smf", "smf lr", "matched"])


def frontier_table(traj: pd.DataFrame, learn: str = "d_medmcqa_gold_loglik",
                   forget: str = "d_chat_drift_kl", cells: bool = False) -> pd.DataFrame:
    """The end point of every method and learning rate in ``trajectories.csv`` (mean over seeds): the learning
    gain and the forgetting, each with its paired 95% interval (with several seeds, the union of the seeds'
    intervals: from the lowest bound to the highest), and which other methods' points *dominate* it: learned at
    least as much and forgot no more (point estimates; smaller is better for ``forget``, larger for ``learn``).

    ``cells=True``: a compact view for reading, one ``"Δ [lo, hi]"`` cell per metric, rounded to what the
    interval supports, and the rate as text.
    """
    cols = ["method", "lr", "seeds", learn, f"{learn}_lo", f"{learn}_hi", forget, f"{forget}_lo", f"{forget}_hi",
            "dominated by"]
    if traj.empty:
        return pd.DataFrame(columns=cols)
    df = end_points(traj, (learn, forget))
    df["dominated by"] = [
        ", ".join(f"{o['method']} {o['lr']:g}" for _, o in df.iterrows()
                  if o["method"] != r["method"] and o[learn] >= r[learn] and o[forget] <= r[forget])
        for _, r in df.iterrows()]
    df = df.assign(_o=df["method"].map(order_key)).sort_values(["_o", "lr"]).drop(columns="_o")[cols]
    if cells:
        df = pd.DataFrame({"method": df["method"], "lr": df["lr"].map(rate_label), "seeds": df["seeds"],
                           **{m[2:].replace("_", " "): [interval_cell(r[m], r[f"{m}_lo"], r[f"{m}_hi"])
                                                        for _, r in df.iterrows()] for m in (learn, forget)},
                           "dominated by": df["dominated by"]})
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
    ``no clear change`` (better means more learning, or less forgetting); ``lr`` is the run's learning rate."""
    rows = []
    for _, r in summary[summary["method"] != "base"].iterrows():
        row = {"method": r["method"], "seed": seed_label(r["seed"]), "lr": rate_label(r.get("lr", ""))}
        for m, (_, _, sign, _) in METRICS.items():
            lo, hi = r.get(f"d_{m}_lo"), r.get(f"d_{m}_hi")
            if lo is None or hi is None or (isinstance(lo, float) and np.isnan(lo)):
                continue
            up = "better" if sign > 0 else "worse"
            down = "worse" if sign > 0 else "better"
            row[m] = up if lo > 0 else down if hi < 0 else "no clear change"
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["method", "seed", "lr"])


def differences_table(runs: list[dict], smf=("smf-kl", "smf-tfidf"),
                      baselines=("lora-mem", "full-mem", "lora", "full")) -> pd.DataFrame:
    """SMF minus each baseline directly: for every metric both fully evaluated runs scored on the same items, the
    paired difference with its 95% bootstrap interval over items (``other`` is the baseline, ``run`` the SMF arm;
    accuracies as fractions) and its verdict (:func:`~smf_lib.study.paired_stats.verdict`: better, worse or cannot
    tell, in the metric's own direction). One row per (SMF arm, baseline, seed, metric), then, where both ran at
    more than one seed, a row with ``seed`` ``"all"``: the seeds' differences averaged, the interval over items
    (:func:`~smf_lib.study.paired_stats.pooled_bootstrap`) and a verdict that also needs every seed to agree
    (:func:`~smf_lib.study.paired_stats.seed_verdict`)."""
    reported = [r for r in runs if is_report(r) and r.get("items")]
    rows = []
    for arm in smf:
        for base in baselines:
            pairs = []
            for r in (x for x in reported if x["method"] == arm):
                b = next((x for x in reported if x["method"] == base and x["seed"] == r["seed"]
                          and x.get("split") == r.get("split")), None)
                if b is not None:
                    pairs.append((r["seed"], b["items"], r["items"]))
            for metric, (keys, _, sign, *_rest) in METRICS.items():
                have = [(s, b, r) for s, b, r in pairs if all(k in r and k in b for k in keys)]
                for s, b, r in have:
                    ci = paired_bootstrap(b, r, metric)
                    rows.append({"smf": arm, "baseline": base, "seed": s, "metric": metric, "difference": ci["delta"],
                                 "lo": ci["lo"], "hi": ci["hi"], "verdict": verdict(ci["lo"], ci["hi"], sign)})
                if len(have) > 1:
                    ci = pooled_bootstrap([(b, r) for _, b, r in have], metric)
                    rows.append({"smf": arm, "baseline": base, "seed": "all", "metric": metric,
                                 "difference": ci["delta"], "lo": ci["lo"], "hi": ci["hi"],
                                 "verdict": seed_verdict(ci["lo"], ci["hi"], sign, ci["per_seed"])})
    return pd.DataFrame(rows, columns=["smf", "baseline", "seed", "metric", "difference", "lo", "hi", "verdict"])


def write_summary(out: str | Path) -> Path:
    """Write ``out/summary.csv``, ``out/differences.csv`` (SMF minus each baseline, per seed) and
    ``out/trajectories.csv`` atomically from the run files."""
    out = Path(out)
    runs = load_runs(out)
    atomic_write(out / "trajectories.csv", trajectory_table(runs).to_csv(index=False, float_format="%.6g"))
    atomic_write(out / "differences.csv", differences_table(runs).to_csv(index=False, float_format="%.6g"))
    return atomic_write(out / "summary.csv", summary_table(runs).to_csv(index=False, float_format="%.6g"))


def _first(runs, method, seed=None):
    """The fully evaluated run of ``method`` (the preset's rate) with ``seed``, or with the lowest seed when
    ``seed`` is None; None if there is none."""
    cands = [r for r in runs if r["method"] == method and is_report(r)
             and (seed is None or r["seed"] == seed)]
    return min(cands, key=lambda r: r["seed"]) if cands else None


def _verdict(lo, hi, agree_if, disagree_if) -> str:
    if agree_if(lo, hi):
        return "agrees"
    if disagree_if(lo, hi):
        return "disagrees"
    return "cannot tell"


def claims_table(runs: list[dict], smf: str = "smf-kl", seed: int | None = None,
                 baselines=("lora", "full")) -> pd.DataFrame:
    """The paper's headline claims (its abstract; METHOD.md section 7) against this study, one row per claim:
    what was compared (``compared``: which runs, which metric, its unit), what was measured (``measured``: the
    change and its paired 95% interval) and whether the study agrees, disagrees or cannot tell at that interval.

    ``seed``: the training seed whose runs are compared (every method's run with that seed); None takes each
    method's lowest seed. A method without a run of that seed reads "not run yet".

    Claims: SMF gains about 2.5 points on MedMCQA (agrees: the interval is above 0 and reaches 1.25; disagrees: it
    lies entirely below 1.25, half the claimed gain); SMF keeps WikiText perplexity and TriviaQA accuracy within
    about 1 point of base (agrees: the interval excludes a loss beyond 1, so a clear gain agrees too; disagrees: the
    whole interval is a loss beyond 1); LoRA and full finetuning gain more on MedMCQA than SMF; LoRA and full finetuning
    drift clearly on both probes.

    ``baselines``: the LoRA and full-finetuning arms the last claims are checked on; ``view`` says where each row's
    runs started: ``lora``/``full`` from the base model (the paper's view), ``lora-mem``/``full-mem`` from the same
    retrofitted model as SMF (same start), whose own drift is read from the retrofit of their seed.
    """
    base = next((r for r in runs if r["method"] == "base" and is_report(r)), None)
    rows = []
    s = _first(runs, smf, seed)

    def ci(a, b, metric):
        if a is None or b is None or any(k not in a["items"] or k not in b["items"] for k in METRICS[metric][0]):
            return None
        return paired_bootstrap(a["items"], b["items"], metric)

    def add(claim, compared, c, agree_if, disagree_if, scale=1.0, unit="", view="SMF against base"):
        compared += f" ({unit})" if unit else ""
        row = {"claim": claim, "view": view, "compared": compared}
        if c is None:
            rows.append({**row, "measured": "not run yet", "verdict": "cannot tell"})
            return
        text = f"{c['delta'] * scale:+.2f} [{c['lo'] * scale:+.2f}, {c['hi'] * scale:+.2f}]"
        rows.append({**row, "measured": text,
                     "verdict": _verdict(c["lo"] * scale, c["hi"] * scale, agree_if, disagree_if)})

    # "about +2.5": a gain whose interval lies entirely below half of that is too small to be the claimed one
    add(f"{smf} gains about +2.5 points on MedMCQA", f"{smf} - base, accuracy", ci(base, s, "medmcqa_acc"),
        lambda lo, hi: lo > 0 and hi >= 1.25, lambda lo, hi: hi < 1.25, 100, "points")
    # "keeps within about 1": a claim about not forgetting, so a clear improvement agrees with it; it is contradicted
    # only by a loss beyond 1 (perplexity up, accuracy down) and cannot be told while the interval reaches past -1/+1
    add(f"{smf} keeps WikiText perplexity within about 1 of base", f"{smf} - base, perplexity",
        ci(base, s, "wikitext_ppl"), lambda lo, hi: hi <= 1, lambda lo, hi: lo > 1)
    add(f"{smf} keeps TriviaQA accuracy within about 1 point of base", f"{smf} - base, accuracy",
        ci(base, s, "triviaqa_acc"), lambda lo, hi: lo >= -1, lambda lo, hi: hi < -1, 100, "points")
    for other in baselines:  # each baseline's own drift is read from the model it started from
        o, view = _first(runs, other, seed), "same start" if other.endswith("-mem") else "from base (paper's view)"
        ref = start_run(o, runs) if o is not None else None
        frm = "retrofit" if other.endswith("-mem") else "base"
        add(f"{other} gains more on MedMCQA than {smf}", f"{other} - {smf}, accuracy", ci(s, o, "medmcqa_acc"),
            lambda lo, hi: lo > 0, lambda lo, hi: hi < 0, 100, "points", view)
        add(f"{other} raises WikiText perplexity clearly", f"{other} - {frm}, perplexity",
            ci(ref, o, "wikitext_ppl"), lambda lo, hi: lo > 0, lambda lo, hi: hi < 0, view=view)
        add(f"{other} lowers TriviaQA accuracy clearly", f"{other} - {frm}, accuracy", ci(ref, o, "triviaqa_acc"),
            lambda lo, hi: hi < 0, lambda lo, hi: lo > 0, 100, "points", view)
    return pd.DataFrame(rows)


def delta_table(summary: pd.DataFrame, metrics=("medmcqa_acc", "acquisition_acc", "chat_drift_kl", "chat_loglik",
                                               "wikitext_ppl", "triviaqa_acc")) -> pd.DataFrame:
    """A compact view of ``summary``: per run and metric one cell ``"Δ [lo, hi]"`` (accuracies in points), rounded
    to what the interval supports; metrics a run lacks are left out. ``lr`` is the run's learning rate."""
    rows = []
    for _, r in summary[summary["method"] != "base"].iterrows():
        row = {"method": r["method"], "seed": seed_label(r["seed"]), "lr": rate_label(r.get("lr", ""))}
        for m in metrics:
            if f"d_{m}" not in r or pd.isna(r.get(f"d_{m}")):
                continue
            s = probe_metrics()[m].scale if m in probe_metrics() else 1
            row[m.replace("_", " ")] = interval_cell(r[f"d_{m}"] * s, r[f"d_{m}_lo"] * s, r[f"d_{m}_hi"] * s)
        rows.append(row)
    return pd.DataFrame(rows, columns=None if rows else ["method", "seed", "lr"])


def resolution_table(summary: pd.DataFrame, runs: list[dict], metrics=None) -> pd.DataFrame:
    """The smallest change each probe resolves in this study: per metric, the items it is computed on and the
    median half-width of the paired 95% intervals of the runs in ``summary`` (in the tables' units). A change
    smaller than the half-width cannot be told from zero on these items."""
    registry = probe_metrics()
    base = next((r for r in runs if r["method"] == "base" and is_report(r)), None)
    rows = []
    for m in metrics or registry:
        if f"d_{m}_lo" not in summary or m not in registry:
            continue
        trained = summary[summary["method"] != "base"]
        half = ((trained[f"d_{m}_hi"] - trained[f"d_{m}_lo"]) / 2).dropna()
        if half.empty:
            continue
        spec = registry[m]
        items = len(base["items"][spec.items[0]]) if base is not None and spec.items[0] in base["items"] else None
        rows.append({"metric": spec.label, "items": items, "half-width": float(half.median()) * spec.scale,
                     "unit": spec.unit or ""})
    return pd.DataFrame(rows, columns=["metric", "items", "half-width", "unit"])


def option_probabilities(runs: list[dict], item: int, probe: str = "medmcqa") -> pd.DataFrame:
    """One question's four option probabilities (a softmax of the option scores, as ``gold_prob``) under every fully
    evaluated run that kept them: columns ``run``, ``option`` (A-D), ``probability`` and ``gold`` (bool)."""
    rows = []
    for r in runs:
        scores = r["items"].get(f"{probe}_option_loglik")
        if not is_report(r) or not scores or item >= len(scores):
            continue
        s = np.asarray(scores[item], dtype=float)
        p = np.exp(s - s.max())
        p /= p.sum()
        gold = int(np.argmin(np.abs(s - r["items"][f"{probe}_gold_loglik"][item])))  # the gold option's score
        label = r["method"] if r["method"] == "base" else f"{r['method']} s{r['seed']}"
        for k, v in enumerate(p):
            rows.append({"run": label, "option": "ABCD"[k], "probability": float(v), "gold": gold == k})
    return pd.DataFrame(rows, columns=["run", "option", "probability", "gold"])
