"""Comparisons at equal learning: the level of dev learning every arm reaches, the rate of each arm that reaches it,
and what each probe did there, SMF against each baseline.

A training run's trajectory scores the dev subset at evenly spaced steps (step 0 is the model it started from).
Learning at a point is the change of the mean MedMCQA gold margin (the gold option's score minus the best
distractor's) since step 0, on the same dev items. Where a run's learning first crosses a level, each probe's items
are interpolated linearly between the two points around the crossing, so every arm is read at the same learning,
whatever its rate. Per arm and seed the run read is the smallest swept rate that reaches the level (fixed before
looking at what it forgot: the gentlest training that gets there). The arms are compared item by item on the same dev
items: per-item changes are averaged over the seeds, and the interval is a paired bootstrap over items; each seed's
own difference is listed beside it. A difference is "better" or "worse" when its 95% interval excludes 0 (in the
probe's own direction), else "cannot tell".

Choosing the reported runs (done by the runner, step by step). A study whose preset lists ``rates_to_choose`` sweeps
each of those arms first (``sweep``, at every ``sweep_seeds``) along dev trajectories. Once every swept run is in,
:func:`choose_step` fixes the **common level** once (:func:`~smf_lib.study.paired_stats.common_level` of the swept
arms' final dev learning: the midpoint of the overlap of their ranges, so never any arm's highest rate) and takes,
per arm, the swept rate whose final dev learning is closest to it (:func:`choose_rates`). An arm that is not within
``MATCH_MARGIN`` of the level gets one more swept rate, interpolated in log-rate between its rates around the level,
at every sweep seed, and the choice is made again at the same level, for at most ``MAX_ROUNDS`` rounds; an arm still
outside the margin then takes its closest rate and the file says it was not matched. Where the arms' ranges do not
overlap, the arm whose range ends first gets a rate 3x above its highest and the one whose range starts last a rate
3x below its lowest, in the same rounds.

Arms that are not swept follow a swept arm of the same training (``FOLLOWS``): LoRA and full finetuning from the base
model (the paper's view) take the rates chosen for LoRA and full finetuning on the retrofitted model.

The choice is written to ``chosen_rates.json`` in the results folder (with the records it rests on and the code that
chose it); :func:`apply_choice` fills it into the preset, so ``run``, ``status`` and ``frontier`` read the same
rates, and a resumed study goes on from it. The runner calls :func:`choose_step` whenever grid runs wait for a rate.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from .paired_stats import (MATCH_MARGIN, METRICS, common_level, item_interval as _interval, seed_verdict,  # noqa: F401
                           verdict)
from ..files import read_json, write_json
from .records import is_report, read_run

#: The learning measure along trajectories.
LEARN = "medmcqa_gold_margin"
#: The probes read at equal learning (dev subset): retention of chat and text, and the trained questions.
PROBES = ("chat_loglik", "chat_drift_kl", "wikitext_drift_kl", "acquisition_gold_margin")


def _value(items: dict, metric: str) -> float:
    keys, fn = METRICS[metric][:2]
    return float(fn([np.asarray(items[k], dtype=float) for k in keys]))


def _learning(points: list[dict], learn: str = LEARN) -> np.ndarray:
    start = _value(points[0]["items"], learn)
    return np.array([_value(p["items"], learn) - start for p in points])


def trajectory_runs(runs: list[dict], arm: str, seed: int) -> list[dict]:
    """The runs of ``arm`` at ``seed`` that kept a trajectory of at least two points, by rate (one per rate: the
    reported run where a swept run and a reported run share a rate)."""
    by_rate = {}
    for r in runs:
        if r.get("method") != arm or r.get("seed") != seed or len(r.get("trajectory") or []) < 2:
            continue
        lr = (r.get("train_config") or {}).get("lr")
        if lr not in by_rate or is_report(r):
            by_rate[lr] = r
    return [by_rate[k] for k in sorted(by_rate)]


def crossing(run: dict, level: float, learn: str = LEARN) -> dict | None:
    """Where the run's dev learning first reaches ``level``: ``{"step", "lr", "items"}`` with every item array
    interpolated between the points around it, and ``"start"`` (step 0's items); None if it never does."""
    points = run["trajectory"]
    gain = _learning(points, learn)
    above = np.nonzero(gain >= level)[0]
    if level <= 0 or not len(above) or above[0] == 0:
        return None
    k = int(above[0])
    w = (level - gain[k - 1]) / (gain[k] - gain[k - 1])
    a, b = points[k - 1]["items"], points[k]["items"]
    items = {key: (1 - w) * np.asarray(a[key], dtype=float) + w * np.asarray(b[key], dtype=float)
             for key in a if key in b and np.asarray(a[key]).dtype.kind in "fiub"
             and np.asarray(a[key]).shape == np.asarray(b[key]).shape}
    step = (1 - w) * points[k - 1]["step"] + w * points[k]["step"]
    return {"step": float(step), "lr": (run.get("train_config") or {}).get("lr"), "items": items,
            "start": points[0]["items"]}


def _item_change(cross: dict, metric: str) -> np.ndarray:
    """Per-item change of a one-array metric from the run's start to the crossing."""
    keys = METRICS[metric][0]
    if len(keys) != 1:
        raise ValueError(f"{metric} is not read item by item; use a metric with one item array")
    return cross["items"][keys[0]] - np.asarray(cross["start"][keys[0]], dtype=float)


def at_level(runs: list[dict], arms, seeds, level: float, metrics=PROBES, learn: str = LEARN) -> dict:
    """Each arm's per-item changes at ``level`` of dev learning: ``{arm: {"seeds": {seed: {"lr", "step",
    metric: array}}}}`` for the seeds where some swept rate reaches it (the smallest such rate)."""
    out = {}
    for arm in arms:
        per_seed = {}
        for seed in seeds:
            for run in trajectory_runs(runs, arm, seed):  # by rate, smallest first
                cross = crossing(run, level, learn)
                if cross is not None:
                    per_seed[seed] = {"lr": cross["lr"], "step": cross["step"],
                                      **{m: _item_change(cross, m) for m in metrics
                                         if METRICS[m][0][0] in cross["items"]}}
                    break
        out[arm] = {"seeds": per_seed}
    return out


def compare_at_level(runs: list[dict], level: float, smf=("smf-kl", "smf-tfidf"), baselines=("lora-mem", "full-mem"),
                     seeds=(0, 1), metrics=PROBES, learn: str = LEARN) -> pd.DataFrame:
    """SMF minus each baseline at the same dev learning, per probe: the difference of per-item changes averaged over
    the seeds both reach the level at, its paired 95% interval over items, each seed's own difference, and the
    verdict in the probe's direction (:func:`~smf_lib.study.paired_stats.seed_verdict`: every seed must agree)."""
    reads = at_level(runs, (*smf, *baselines), seeds, level, metrics, learn)
    rows = []
    for s in smf:
        for b in baselines:
            both = sorted(set(reads[s]["seeds"]) & set(reads[b]["seeds"]))
            for m in metrics:
                have = [k for k in both if m in reads[s]["seeds"][k] and m in reads[b]["seeds"][k]]
                if not have:
                    continue
                diffs = [reads[s]["seeds"][k][m] - reads[b]["seeds"][k][m] for k in have]
                d = np.mean(diffs, axis=0)
                lo, hi = _interval(d)
                rows.append({"smf": s, "baseline": b, "probe": m, "level": level, "seeds": len(have),
                             "difference": float(d.mean()), "lo": lo, "hi": hi,
                             "per seed": [round(float(x.mean()), 4) for x in diffs],
                             "smf rates": [reads[s]["seeds"][k]["lr"] for k in have],
                             "baseline rates": [reads[b]["seeds"][k]["lr"] for k in have],
                             "verdict": seed_verdict(lo, hi, METRICS[m][2], [x.mean() for x in diffs])})
    return pd.DataFrame(rows, columns=None if rows else ["smf", "baseline", "probe", "difference", "verdict"])


def final_learning(runs: list[dict], arms, seeds=(0, 1), learn: str = LEARN) -> pd.DataFrame:
    """Each arm and rate's dev learning at the end of its trajectory, averaged over the seeds it ran at."""
    rows = []
    for arm in arms:
        per_rate = {}
        for seed in seeds:
            for run in trajectory_runs(runs, arm, seed):
                per_rate.setdefault(run["train_config"]["lr"], []).append(_learning(run["trajectory"], learn)[-1])
        rows += [{"arm": arm, "lr": lr, "learning": float(np.mean(v)), "seeds": len(v)}
                 for lr, v in sorted(per_rate.items())]
    return pd.DataFrame(rows, columns=["arm", "lr", "learning", "seeds"])


def reachable_level(ends: pd.DataFrame, step: float = 0.05) -> float | None:
    """The largest multiple of ``step`` nats that every arm's best rate passes by the end of its trajectory (for a
    study whose arms' ranges do not overlap, so :func:`common_level` has none); None if some arm never gets to
    ``step``."""
    if ends.empty:
        return None
    best = float(ends.groupby("arm")["learning"].max().min())
    level = math.floor(best / step + 1e-9) * step
    return round(level, 10) if level > 0 else None


def choose_rates(ends: pd.DataFrame, level: float, margin: float = MATCH_MARGIN) -> pd.DataFrame:
    """Per arm, the swept rate whose final dev learning is closest to ``level``; ``matched`` when within
    ``margin``, else ``add rate``: the rate interpolated in log-rate between the swept rates just below and above
    the level (None if they do not bracket it)."""
    rows = []
    for arm, g in ends.groupby("arm", sort=False):
        g = g.sort_values("lr")
        best = g.loc[(g["learning"] - level).abs().idxmin()]
        below, above = g[g["learning"] < level], g[g["learning"] >= level]
        suggest = None
        if len(below) and len(above):
            (r0, l0), (r1, l1) = below.iloc[-1][["lr", "learning"]], above.iloc[0][["lr", "learning"]]
            if l1 != l0:
                t = (level - l0) / (l1 - l0)
                suggest = float(math.exp(math.log(r0) + t * (math.log(r1) - math.log(r0))))
        matched = abs(best["learning"] - level) <= margin + 1e-12  # a difference of exactly the margin counts
        rows.append({"arm": arm, "lr": float(best["lr"]), "learning": float(best["learning"]), "level": level,
                     "matched": bool(matched), "add rate": None if matched else suggest})
    return pd.DataFrame(rows, columns=["arm", "lr", "learning", "level", "matched", "add rate"])


def frontier_report(preset, runs: list[dict], out="the results folder") -> list[str]:
    """What ``python -m smf_lib frontier`` prints for ``preset``'s run records ``runs`` (from ``out``): each arm's
    final dev learning by rate, the common level, the rate each arm's reported runs take (or the rate to add), and
    SMF against each baseline at that level."""
    smf = [a for a in ("smf-kl", "smf-tfidf") if a in preset.methods]
    same_start = [a for a in ("lora-mem", "full-mem") if a in preset.methods]
    baselines = same_start or [a for a in ("lora", "full") if a in preset.methods]  # else the paper's view
    seeds = tuple(preset.seeds)
    ends = final_learning(runs, (*smf, *baselines), seeds)
    if ends.empty:
        return [f"no swept run with a trajectory in {out} yet: `python -m smf_lib run --preset {preset.name}` "
                "runs them"]
    lines = ["final dev learning (MedMCQA gold margin, nats) by arm and rate, mean over seeds:",
             ends.assign(lr=ends["lr"].map("{:g}".format)).round(4).to_string(index=False)]
    level = common_level(ends)
    if level["level"] is None:
        ranges = "; ".join(f"{a} {lo:.3f} to {hi:.3f}" for a, (lo, hi) in level["ranges"].items())
        return lines + [f"the arms' ranges of dev learning do not overlap ({ranges}): widen the sweep of the arm "
                        "whose range ends first, or of the one that starts last"]
    lines += [f"common level: {level['level']:.4f} (the middle of the overlap {level['lo']:.4f} to "
              f"{level['hi']:.4f}); matched within {MATCH_MARGIN:g} nats",
              choose_rates(ends, level["level"]).round(4).to_string(index=False, float_format="{:g}".format),
              "SMF minus each baseline at that level of dev learning (per-item changes, mean over seeds, paired 95% "
              "interval over items):",
              compare_at_level(runs, level["level"], smf, baselines, seeds)
              .drop(columns=["level"], errors="ignore").round(4).to_string(index=False)]
    return lines


#: The file a study's choice is kept in, in its results folder.
CHOSEN = "chosen_rates.json"
#: Rounds of added rates before an arm outside the margin takes its closest rate.
MAX_ROUNDS = 2
#: Arms that are not swept and take the rate chosen for another arm of the same training.
FOLLOWS = {"lora": "lora-mem", "full": "full-mem"}


def read_choice(out: str | Path) -> dict | None:
    """The choice kept in ``out`` (None if there is none yet)."""
    path = Path(out) / CHOSEN
    return read_json(path) if path.exists() else None


def _name(rec: dict) -> str:
    return f"{rec['method']}-lr{rec['train_config']['lr']:g}-s{rec['seed']}"


def _swept_records(runs: list[dict]) -> dict[str, dict]:
    """The swept (trajectory) records among ``runs``, by name."""
    return {_name(r): r for r in runs
            if not is_report(r) and len(r.get("trajectory") or []) >= 2 and r.get("train_config")}


def _records(out: str | Path) -> list[dict]:
    return [read_run(p, ("method",)) for p in sorted(Path(out).glob("runs/*.json"))]


def stale_choice(kept: dict | None, out: str | Path, runs: list[dict] | None = None) -> list[str]:
    """The swept records a kept choice rests on that changed since (another identity, e.g. after ``--fresh``) or
    went; a choice with any is stale and is made again. ``runs``: the records of ``out``, if read already."""
    if not kept:
        return []
    now = {name: rec.get("identity_hash") for name, rec in _swept_records(
        _records(out) if runs is None else runs).items()}
    return sorted(n for n, h in (kept.get("records") or {}).items() if now.get(n) != h)


def apply_choice(preset, out: str | Path, kept: dict | None = None):
    """``preset`` with the choice kept in ``out`` (or ``kept``) filled in, for the rates still to choose only (a
    rate set by hand, ``--lr``, stays): the rates added to their sweeps, and their chosen rates (dropped from
    ``rates_to_choose``) once every arm has one. Unchanged when nothing is kept or the kept choice is stale."""
    if kept is None:
        kept = read_choice(out) if preset.rates_to_choose else None
        kept = None if stale_choice(kept, out) else kept
    if not kept:
        return preset
    open_ = set(preset.rates_to_choose)
    sweep = {arm: tuple(sorted({*preset.sweep.get(arm, ()), *added})) for arm, added in kept["added"].items()
             if arm in open_}
    chosen = {k: v for k, v in (kept.get("rates") or {}).items() if k in open_}
    return dataclasses.replace(preset, sweep={**preset.sweep, **sweep}, lr={**preset.lr, **chosen},
                               rates_to_choose=tuple(k for k in preset.rates_to_choose if k not in chosen))


def _swept_arms(preset) -> list[str]:
    return [a for a in preset.rates_to_choose if a in preset.sweep]


def _round(rate: float) -> float:
    """A rate to two significant digits (a run's name carries it)."""
    return float(f"{rate:.2g}")


def _widen(ranges: dict) -> dict:
    """Where the arms' ranges do not overlap: the arm whose range ends first goes 3x above its highest rate, the
    one whose range starts last 3x below its lowest."""
    first = min(ranges, key=lambda a: ranges[a]["max"])
    last = max(ranges, key=lambda a: ranges[a]["min"])
    return {first: [_round(ranges[first]["top"] * 3)], last: [_round(ranges[last]["bottom"] / 3)]}


def _failed_runs(out: str | Path) -> set[tuple]:
    """(method, seed, rate) of the runs recorded under ``out/failed`` (diverged: no metrics)."""
    found = set()
    for path in sorted(Path(out).glob("failed/*.json")):
        ident = read_json(path).get("identity") or {}
        if ident.get("train_config"):
            found.add((ident["method"], ident["seed"], float(ident["train_config"]["lr"])))
    return found


def _new_rates(table, sweep: dict, widen: dict) -> dict:
    """Rates to add: interpolated for each arm outside the margin (or ``widen``'s), less any its sweep has."""
    wanted = dict(widen)
    if table is not None:
        wanted = {row["arm"]: [_round(row["add rate"])] for _, row in table.iterrows()
                  if not row["matched"] and row["add rate"] is not None and not math.isnan(row["add rate"])}
    new = {arm: [r for r in rates if r not in sweep.get(arm, ())] for arm, rates in wanted.items()}
    return {arm: rates for arm, rates in new.items() if rates}


def choose_step(preset, runs: list[dict], out: str | Path, code: dict | None = None, write: bool = True) -> dict | None:
    """One step of the choice for ``preset`` from the finished records ``runs`` of ``out``: None while a swept run
    of an arm to choose is neither finished nor failed; else the kept choice, updated (the level fixed at the first
    step; rates added for arms outside the margin, or the chosen rates once every arm has one) and written to
    ``out/CHOSEN`` (where ``write``). A stale kept choice (:func:`stale_choice`) is made again from the start.
    ``code``: the commit and tree the choosing code runs from, kept with it."""
    arms, seeds = _swept_arms(preset), tuple(preset.sweep_seeds or preset.seeds[:1])
    kept = read_choice(out)
    stale = bool(stale_choice(kept, out, runs))
    if not arms or (kept and kept.get("rates") and not stale):
        return kept if arms else None
    if kept is None or stale:
        kept = {"level": None, "margin": MATCH_MARGIN, "rounds": 0, "added": {}, "rates": None}
    sweep = apply_choice(preset, out, kept).sweep
    failed = {f for f in _failed_runs(out) if f[0] in arms}
    have = {(r["method"], r["seed"], float((r.get("train_config") or {}).get("lr", 0))) for r in runs
            if len(r.get("trajectory") or []) >= 2}
    if {(a, s, float(r)) for a in arms for s in seeds for r in sweep[a]} - have - failed:
        return None
    ends = final_learning(runs, arms, seeds)
    if set(arms) - set(ends["arm"]):
        raise ValueError(f"every swept run of {', '.join(sorted(set(arms) - set(ends['arm'])))} diverged (see "
                         f"{Path(out) / 'failed'}): lower its rates in the preset's sweep and run again")
    widen, table = {}, None
    if kept["level"] is None:
        level = common_level(ends)
        kept["level"] = level["level"]
        if level["level"] is None:
            widen = _widen({a: {"min": g["learning"].min(), "max": g["learning"].max(), "bottom": g["lr"].min(),
                                "top": g["lr"].max()} for a, g in ends.groupby("arm")})
    if kept["level"] is not None and kept["level"] <= 0:
        raise ValueError(f"the arms' common level of dev learning is {kept['level']:+.4f} nats, not above 0: at "
                         "these rates the arms learned nothing to compare at; raise the rates of the preset's sweep "
                         f"(`python -m smf_lib frontier --preset {preset.name}` shows each arm's learning by rate)")
    if kept["level"] is not None:
        table = choose_rates(ends, kept["level"], kept["margin"])
    added = _new_rates(table, sweep, widen) if kept["rounds"] < MAX_ROUNDS else {}
    if added:
        kept["rounds"] += 1
        for arm, rates in added.items():
            kept["added"][arm] = sorted({*kept["added"].get(arm, []), *rates})
    elif table is not None:
        rates = {row["arm"]: float(row["lr"]) for _, row in table.iterrows()}
        for follower, lead in FOLLOWS.items():  # a lead set by hand gives its own rate
            if follower in preset.rates_to_choose:
                rates[follower] = rates.get(lead, preset.train_config(lead, seeds[0]).lr)
        rows = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
                for row in table.to_dict("records")]
        kept.update(rates=rates, table=rows, seeds=list(seeds),
                    unmatched=[row["arm"] for _, row in table.iterrows() if not row["matched"]])
    else:
        raise ValueError(f"the arms' ranges of dev learning still do not overlap after {MAX_ROUNDS} rounds of added "
                         f"rates; widen the sweep in the preset (see `python -m smf_lib frontier --preset "
                         f"{preset.name}`)")
    kept["records"] = {n: r.get("identity_hash") for n, r in _swept_records(runs).items() if r["method"] in arms}
    kept["failed"] = sorted(f"{m}-lr{lr:g}-s{s}" for m, s, lr in failed)
    kept["code"] = code or {}
    if write:
        write_json(Path(out) / CHOSEN, kept)
    return kept


def choose_and_apply(preset, out: str | Path, versions: dict | None = None, world: int = 1, log=print):
    """A step of :func:`choose_step` on the finished records of ``out``, logged, and ``preset`` with its result
    filled in (:func:`apply_choice`). Process 0 makes and writes it; the others take process 0's (``world``
    processes). ``versions``: the runner's record of the code (its git commit and tree state are kept with it)."""
    from ..ddp import broadcast_object, distributed

    kept = None
    if distributed()[0] == 0:
        code = {k: v for k, v in (versions or {}).items() if k.startswith("git") or k == "allow_dirty"}
        kept = choose_step(preset, _records(out), out, code)
    kept = broadcast_object(kept, world)
    if kept is None:
        return preset
    log("\n".join(choice_lines(preset, out, kept)))
    return apply_choice(preset, out, kept)


def choice_lines(preset, out: str | Path, kept: dict | None = None) -> list[str]:
    """The kept choice (of ``out``, or ``kept``) in words, for the runner's log, ``status`` and ``frontier``."""
    if kept is None:
        kept = read_choice(out)
        stale = stale_choice(kept, out)
        if stale:
            return [f"{CHOSEN} is stale (records changed since: {', '.join(stale)}); the runner chooses again"]
    if not _swept_arms(preset) and not kept:
        return []
    if kept is None:
        return [f"rates to choose on dev items once the sweep is in: {', '.join(preset.rates_to_choose)} "
                f"(the runner chooses them; {CHOSEN} keeps the choice)"]
    lines = [f"common level of dev learning: {kept['level']:+.4f} nats, matched within {kept['margin']:g}"
             if kept["level"] is not None else "common level: not yet (the arms' ranges do not overlap)"]
    for arm, rates in kept["added"].items():
        lines.append(f"rates added to {arm}'s sweep (both sweep seeds): {', '.join(f'{r:g}' for r in rates)}")
    if kept.get("failed"):
        lines.append(f"swept runs that diverged (left out of the choice): {', '.join(kept['failed'])}")
    if kept.get("rates"):
        lines.append("reported rates: " + ", ".join(f"{a} {r:g}" for a, r in kept["rates"].items())
                     + (f"; outside the margin: {', '.join(kept['unmatched'])}" if kept.get("unmatched") else ""))
    return lines
