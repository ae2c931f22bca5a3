"""The new-facts study at equal learning (:mod:`smf_lib.study.facts_study`): each arm's learning and forgetting by
rate, the learning level every arm reaches, and SMF against each baseline there.

Learning is the change of the facts' answer log-likelihood (mean per answer token, on every fact's held-out
questions) from the starting model. Unlike the MedMCQA study, a facts run keeps no trajectory: its points are its
rates. Per arm and seed the points are the start (no training) and each swept rate's end, in order of rate; where
the learning first crosses a level, every probe's per-item change is interpolated linearly between the two points
around it. (Below the smallest rate, that is between the start and the smallest rate.) The level is the midpoint of
the overlap of the compared arms' ranges of learning (``COMPARED``: SMF-TF-IDF, SMF-KL, LoRA, full finetuning;
:func:`smf_lib.study.paired_stats.common_level`), never an arm's highest rate; SMF with plain SGD is read at it where
its rates reach it. SMF minus a baseline is compared item by item on the same items: per-item changes averaged over
the seeds both reach the level at, a paired bootstrap interval over items, each seed's own difference, and a verdict
in the probe's own direction.

The dev facts (one seed) run every rate of the preset; they fix the level and choose each arm's reported rates
(:func:`report_plan`). The reported stream is longer than the dev stream, so at the same rate an arm can learn more
(or less) on it, and the dev level can fall between the starting model and an arm's lowest reported rate, or beyond
its highest. Once every planned reported run is in, :func:`bracket_rates` adds, for such an arm only, the next rate of
its dev sweep, so that it can be read between two of its own runs. That rule reads the planned runs' learning, never
a forgetting probe, and the level stays the one the dev facts fixed; the answer (:func:`answer_runs`) waits for the
added runs too. The rule was fixed after the first seed's planned reported runs had been scored, so the reading from
the planned runs alone (the one fixed before them) is given beside it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..files import read_json
from .paired_stats import common_level, item_interval, seed_verdict

#: The learning measure: the facts' answer log-likelihood (nats per answer token, held-out questions).
LEARN = "facts_loglik"
#: Each measure's direction (+1: up is better) and its label.
MEASURES = {
    "facts_loglik": (1, "facts: answer log-lik (nats)"),
    "facts_em": (1, "facts: exact match"),
    "first_facts_loglik": (1, "first facts: answer log-lik (nats)"),
    "first_facts_em": (1, "first facts: exact match"),
    "chat_loglik": (1, "held-out chat log-lik (nats)"),
    "wikitext_nll": (-1, "WikiText NLL (nats per token)"),
    "triviaqa_gold_loglik": (1, "TriviaQA gold answer log-lik (nats)"),
    "medmcqa_gold_margin": (1, "MedMCQA gold margin (nats)"),
}
#: The forgetting probes, read at equal learning.
FORGETTING = ("chat_loglik", "wikitext_nll", "triviaqa_gold_loglik", "medmcqa_gold_margin")
#: Arm names as the chapter shows them.
ARM_LABELS = {"smf-tfidf": "SMF-TF-IDF", "smf-kl": "SMF-KL", "smf-tfidf-sgd": "SMF-TF-IDF, SGD",
              "smf-kl-sgd": "SMF-KL, SGD", "lora": "LoRA", "full": "full finetuning"}


def load(folder: str | Path, split: str = "dev") -> tuple[dict, list[dict]]:
    """The starting model's scores on ``split`` and every finished run of that split in ``folder``."""
    folder = Path(folder)
    start = folder / f"start-{split}.json"
    if not start.exists():
        raise FileNotFoundError(f"{start} is missing: run python -m smf_lib run --preset facts --split {split}")
    runs = [read_json(p) for p in sorted((folder / "runs").glob(f"*-{split}.json"))]
    return read_json(start)["scores"], runs


def _points(runs: list[dict], start: dict, arm: str, seed: int) -> list[tuple[float, dict]]:
    """The start and each rate's end for ``arm`` at ``seed``, by rate."""
    ends = sorted((r["lr"], r["scores"]) for r in runs if r["arm"] == arm and r["seed"] == seed)
    return [(0.0, start)] + ends if ends else []


def _mean(scores: dict, key: str) -> float:
    return float(np.mean(scores[key]))


def frontier_table(runs: list[dict], start: dict, measures=tuple(MEASURES)) -> pd.DataFrame:
    """Per arm and rate (mean over its seeds): each measure's change from the start, and ``seeds``."""
    groups: dict[tuple, list[dict]] = {}
    for r in runs:
        groups.setdefault((r["arm"], r["lr"]), []).append(r["scores"])
    rows = []
    for (arm, lr), picked in groups.items():
        row = {"arm": arm, "lr": lr, "seeds": len(picked)}
        for m in measures:
            if all(m in s for s in picked):
                row[m] = float(np.mean([_mean(s, m) - _mean(start, m) for s in picked]))
        rows.append(row)
    table = pd.DataFrame(rows)
    return table.sort_values(["arm", "lr"], ignore_index=True) if len(table) else table


def learning_ends(runs: list[dict], start: dict) -> pd.DataFrame:
    """Each arm and rate's learning (mean over seeds), as :func:`smf_lib.study.paired_stats.common_level` reads it."""
    table = frontier_table(runs, start, (LEARN,))
    if table.empty:
        return pd.DataFrame(columns=["arm", "lr", "learning", "seeds"])
    return table.rename(columns={LEARN: "learning"})[["arm", "lr", "learning", "seeds"]]


def at_level(runs: list[dict], start: dict, arm: str, seed: int, level: float) -> dict | None:
    """``arm``'s per-item changes at ``level`` of learning for ``seed`` (``{"lr": (rate below, rate above),
    measure: array}``), or None where no swept rate reaches it."""
    points = _points(runs, start, arm, seed)
    gain = np.array([_mean(s, LEARN) - _mean(start, LEARN) for _, s in points])
    above = np.nonzero(gain >= level)[0]
    if level <= 0 or not len(above):
        return None
    k = int(above[0])
    w = (level - gain[k - 1]) / (gain[k] - gain[k - 1])
    (r0, a), (r1, b) = points[k - 1], points[k]
    out = {"lr": (r0, r1)}
    for m in MEASURES:
        if m in a and m in b and len(a[m]) == len(b[m]) == len(start[m]):
            out[m] = (1 - w) * np.asarray(a[m], float) + w * np.asarray(b[m], float) - np.asarray(start[m], float)
    return out


def compare(runs: list[dict], start: dict, level: float, smf=("smf-tfidf", "smf-kl"), baselines=("lora", "full"),
            seeds=(0, 1), probes=FORGETTING) -> pd.DataFrame:
    """SMF minus each baseline at ``level``, per probe: the difference of per-item changes averaged over the seeds
    both reach the level at, its paired 95% interval over items, each seed's own difference and the verdict:
    better or worse only when the interval excludes 0 and every seed's own difference has the same sign (the
    interval is over items, for these seeds; two seeds cannot give an interval over seeds), else cannot tell."""
    reads = {a: {s: at_level(runs, start, a, s, level) for s in seeds} for a in (*smf, *baselines)}
    rows = []
    for a in smf:
        for b in baselines:
            both = [s for s in seeds if reads[a][s] is not None and reads[b][s] is not None]
            for m in probes:
                have = [s for s in both if m in reads[a][s] and m in reads[b][s]]
                if not have:
                    continue
                diffs = [reads[a][s][m] - reads[b][s][m] for s in have]
                d = np.mean(diffs, axis=0)
                lo, hi = item_interval(d)
                rows.append({"smf": a, "baseline": b, "probe": m, "level": level, "seeds": len(have),
                             "difference": float(d.mean()), "lo": lo, "hi": hi,
                             "per seed": [round(float(x.mean()), 4) for x in diffs],
                             "verdict": seed_verdict(lo, hi, MEASURES[m][0], [x.mean() for x in diffs])})
    return pd.DataFrame(rows, columns=["smf", "baseline", "probe", "level", "seeds", "difference", "lo", "hi",
                                       "per seed", "verdict"])


def reads_table(runs: list[dict], start: dict, level: float, arms=None, seeds=(0, 1)) -> pd.DataFrame:
    """Where each arm is read at ``level``, per seed: the two points its reading lies between (``below``: a rate,
    or 0.0 for the starting model; ``above``: a rate) and their learning. An arm whose lowest rate already learned
    more than the level is read on the straight line from the starting model to that rate. ``arms``: by default
    every arm of ``runs``."""
    rows = []
    for arm in arms or [a for a in ARM_LABELS if any(r["arm"] == a for r in runs)]:
        for seed in seeds:
            points = _points(runs, start, arm, seed)
            if not points:
                continue
            gain = [_mean(s, LEARN) - _mean(start, LEARN) for _, s in points]
            k = next((i for i, g in enumerate(gain) if g >= level), None)
            if level <= 0 or k is None:
                rows.append({"arm": arm, "seed": seed, "below": points[-1][0], "above": None,
                             "learning below": gain[-1], "learning above": None, "from start": False})
                continue
            rows.append({"arm": arm, "seed": seed, "below": points[k - 1][0], "above": points[k][0],
                         "learning below": gain[k - 1], "learning above": gain[k], "from start": k == 1})
    return pd.DataFrame(rows, columns=["arm", "seed", "below", "above", "learning below", "learning above",
                                       "from start"])


#: An arm takes part in the common level once it has run at this many rates (one rate is a point, not a range).
MIN_RATES = 2


def swept(ends: pd.DataFrame) -> pd.DataFrame:
    """The learning ends of the arms that ran at ``MIN_RATES`` rates or more."""
    if ends.empty:
        return ends
    return ends[ends.groupby("arm")["lr"].transform("nunique") >= MIN_RATES]


#: The comparison's arms: the common level is theirs. The other arms (SMF with plain SGD) are read at it where
#: their rates reach it.
COMPARED = ("smf-tfidf", "smf-kl", "lora", "full")


def level_of(runs: list[dict], start: dict, arms=COMPARED) -> dict:
    """The common learning level (:func:`~smf_lib.study.paired_stats.common_level`) of ``arms`` (those that ran at
    ``MIN_RATES`` rates or more); ``ranges`` holds every swept arm's range; ``left_out``: the arms with fewer
    rates."""
    ends = learning_ends(runs, start)
    kept = swept(ends)
    level = common_level(kept[kept["arm"].isin(arms)])
    return {**level, "ranges": common_level(kept)["ranges"] if not kept.empty else {},
            "left_out": sorted(set(ends["arm"]) - set(kept["arm"]))}


def resolution(runs: list[dict], measures=(LEARN, *FORGETTING)) -> pd.DataFrame:
    """What each measure can resolve on these items: its items and the median half-width, over ``runs``, of each
    run's paired 95% interval of its change from the starting model (``changes`` in the record). A change smaller
    than the half-width cannot be told from zero here."""
    rows = []
    for m in measures:
        have = [r["changes"][m] for r in runs if m in r.get("changes", {})]
        if have:
            rows.append({"measure": MEASURES[m][1], "items": int(have[0]["n"]),
                         "half-width": float(np.median([(c["hi"] - c["lo"]) / 2 for c in have]))})
    return pd.DataFrame(rows, columns=["measure", "items", "half-width"])


def changes_at_level(runs: list[dict], start: dict, level: float, seeds=(0, 1), probes=FORGETTING) -> pd.DataFrame:
    """Each arm's change of each probe at ``level`` of learning (:func:`at_level`, the per-item mean, averaged over
    the seeds that reach the level): the size of the effects a probe has to resolve (:func:`resolution`)."""
    rows = []
    for arm in dict.fromkeys(r["arm"] for r in runs):
        reads = [x for x in (at_level(runs, start, arm, sd, level) for sd in seeds) if x is not None]
        for m in probes:
            have = [float(np.mean(x[m])) for x in reads if m in x]
            if have:
                rows.append({"arm": arm, "probe": m, "change": float(np.mean(have)), "seeds": len(have)})
    return pd.DataFrame(rows, columns=["arm", "probe", "change", "seeds"])


def rates_around(runs: list[dict], start: dict, level: float) -> dict[str, tuple[float, ...]]:
    """Per arm, the swept rates around the first crossing of ``level`` along its rates in order (learning as the
    mean over seeds; the start counts as rate 0), as :func:`at_level` reads it: the rate before the crossing and the
    one at it, or the lowest rate alone where the crossing lies between the start and it, or the highest rate alone
    where the arm never reaches the level."""
    out = {}
    for arm, g in learning_ends(runs, start).groupby("arm", sort=False):
        rates, gains = [0.0, *g.sort_values("lr")["lr"]], [0.0, *g.sort_values("lr")["learning"]]
        k = next((i for i in range(1, len(gains)) if gains[i] >= level), None)
        pick = [rates[-1]] if k is None else [r for r in (rates[k - 1], rates[k]) if r > 0]
        out[arm] = tuple(float(r) for r in pick)
    return out


def overwriting(runs: list[dict], start: dict, level: float, seeds=(0, 1)) -> pd.DataFrame:
    """Did later facts overwrite earlier ones? Per arm at ``level`` of learning (interpolated as :func:`at_level`,
    mean over the seeds that reach it): the answer log-likelihood gain on every fact's held-out questions and on
    the first facts' alone (the stream's oldest, trained longest ago)."""
    rows = []
    for arm in dict.fromkeys(r["arm"] for r in runs):
        reads = [x for x in (at_level(runs, start, arm, s, level) for s in seeds) if x is not None]
        if reads and all("first_facts_loglik" in x for x in reads):
            every = float(np.mean([x["facts_loglik"].mean() for x in reads]))
            first = float(np.mean([x["first_facts_loglik"].mean() for x in reads]))
            rows.append({"arm": ARM_LABELS.get(arm, arm), "every fact": every, "first facts": first,
                         "first / every": first / every if every else float("nan"), "seeds": len(reads)})
    return pd.DataFrame(rows, columns=["arm", "every fact", "first facts", "first / every", "seeds"])


def dev_run_names(preset) -> list[str]:
    """The names of the preset's dev runs, in the order they run."""
    return run_names(preset.rates, preset.dev_seeds, "dev")


def run_names(rates: dict, seeds, split: str = "report") -> list[str]:
    """The names of the runs of ``rates`` (per arm) at ``seeds``, in the order they run: all of a seed first."""
    return [f"{arm}-lr{lr:g}-s{seed}-{split}" for seed in seeds for arm, arm_rates in rates.items()
            for lr in arm_rates]


def dev_runs_left(preset, folder: str | Path) -> list[str]:
    """The dev runs of ``preset`` with no record in ``folder`` (by name, so a stray record cannot stand in); a run
    whose training diverged (``failed/``) is finished, with no metrics."""
    folder = Path(folder)
    return [name for name in dev_run_names(preset)
            if not (folder / "runs" / f"{name}.json").exists() and not (folder / "failed" / f"{name}.json").exists()]


def report_plan(preset, folder: str | Path) -> dict:
    """What the reported facts run, chosen on the dev facts only: ``level``, the common level of the dev sweep
    (fixed before any reported run), and ``rates``, per arm the dev rates around the first crossing of that level
    (:func:`rates_around`). Refuses while a dev run is missing or the compared arms
    share no level."""
    left = dev_runs_left(preset, folder)
    if left:
        raise ValueError(f"the reported facts run at rates chosen on the dev facts, and {len(left)} dev run(s) are "
                         f"not finished in {folder} ({', '.join(left[:3])}...): run --split dev first")
    start, runs = load(folder, "dev")
    names = set(dev_run_names(preset))
    runs = [r for r in runs if r["run"] in names]
    found = level_of(runs, start)
    if found["level"] is None:
        raise ValueError("the dev runs' ranges of learning do not overlap, so no rate can be chosen at equal "
                         f"learning: add rates to the arms in the preset (ranges: {found.get('ranges')})")
    around = rates_around(runs, start, found["level"])
    return {"level": found["level"], "rates": {arm: around[arm] for arm in preset.rates if arm in around}}


def _name(run: dict, split: str = "report") -> str:
    return f"{run['arm']}-lr{run['lr']:g}-s{run['seed']}-{split}"


def failed_runs(folder: Path) -> set[str]:
    """The runs whose training diverged (``failed/``): finished, with no metrics."""
    return {f.stem for f in (folder / "failed").glob("*.json")} if (folder / "failed").exists() else set()


def _reported(preset, folder: Path, rates: dict) -> tuple[dict, list[dict]] | None:
    """The starting model's reported scores and the reported runs of ``rates`` at every seed (matched by name; a run
    that diverged counts as finished, with no record), or None while one of them (or the start) is missing."""
    if not (folder / "start-report.json").exists():
        return None
    names = set(run_names(rates, preset.seeds))
    start, runs = load(folder, "report")
    runs = [r for r in runs if _name(r) in names]
    missing = names - {_name(r) for r in runs} - failed_runs(folder)
    return None if missing else (start, runs)


def bracket_rates(preset, folder: str | Path, plan: dict | None = None) -> dict[str, tuple[float, ...]] | None:
    """The rates added to the reported facts, per arm, or None while a planned reported run is missing.

    Per arm, where at some seed its lowest planned rate already learned more than the dev level (so that seed would
    be read on the line from the starting model), the next lower rate of its dev sweep is added; where at some seed
    its highest planned rate learned less, the next higher one. The dev sweep's rates are those with a dev record
    (a rate that diverged on the dev facts is never added). One step only: an arm with no such rate, or still on one
    side after it, is read as :func:`at_level` reads any arm (from the starting model, or not at all)."""
    folder = Path(folder)
    plan = plan or report_plan(preset, folder)
    found = _reported(preset, folder, plan["rates"])
    return None if found is None else _additions(preset, folder, plan, *found)


def bracket_rates_so_far(preset, folder: str | Path, plan: dict | None = None) -> dict[str, tuple[float, ...]]:
    """The rates :func:`bracket_rates` will add whatever the planned runs still to come give: the rule adds a rate
    when *some* seed's run lies on one side of the level, so the finished runs already decide these (more may
    follow). For ``status``."""
    folder = Path(folder)
    plan = plan or report_plan(preset, folder)
    if not (folder / "start-report.json").exists():
        return {}
    start, runs = load(folder, "report")
    names = set(run_names(plan["rates"], preset.seeds))
    return _additions(preset, folder, plan, start, [r for r in runs if _name(r) in names])


def _additions(preset, folder: Path, plan: dict, start: dict, runs: list[dict]) -> dict[str, tuple[float, ...]]:
    _, dev = load(folder, "dev")
    swept = set(dev_run_names(preset))
    out = {}
    for arm, rates in plan["rates"].items():
        gain = {(r["lr"], r["seed"]): _mean(r["scores"], LEARN) - _mean(start, LEARN) for r in runs if r["arm"] == arm}
        lowest = [g for (lr, _), g in gain.items() if lr == min(rates)]
        highest = [g for (lr, _), g in gain.items() if lr == max(rates)]
        grid = sorted({r["lr"] for r in dev if r["arm"] == arm and r.get("run") in swept})
        pick = ([r for r in grid if r < min(rates)][-1:] if any(g > plan["level"] for g in lowest) else [])
        pick += [r for r in grid if r > max(rates)][:1] if any(g < plan["level"] for g in highest) else []
        if pick:
            out[arm] = tuple(float(r) for r in pick)
    return out


def _merged(*parts: dict) -> dict[str, tuple[float, ...]]:
    out: dict[str, tuple[float, ...]] = {}
    for part in parts:
        for arm, rates in part.items():
            out[arm] = tuple(sorted({*out.get(arm, ()), *rates}))
    return out


def answer_runs(preset, folder: str | Path) -> dict:
    """The runs the study's answer rests on: the reported facts once every planned reported run (each arm at its
    :func:`report_plan` rates, every seed) and every run :func:`bracket_rates` added has finished, read at the dev
    level fixed before them; else the dev facts, read at their own common level. Returns ``split``, ``start``,
    ``runs`` (only the planned and added ones), ``seeds``, ``level``, ``planned`` (the planned rates per arm; on the
    dev facts, every swept rate) and ``added`` (the added rates per arm)."""
    folder = Path(folder)
    if (folder / "start-report.json").exists():
        plan = report_plan(preset, folder)
        added = bracket_rates(preset, folder, plan)
        found = None if added is None else _reported(preset, folder, _merged(plan["rates"], added))
        if found is not None:
            return {"split": "report", "start": found[0], "runs": found[1], "seeds": tuple(preset.seeds),
                    "level": plan["level"], "planned": plan["rates"], "added": added}
    start, runs = load(folder, "dev")
    return {"split": "dev", "start": start, "runs": runs, "seeds": tuple(preset.dev_seeds),
            "level": level_of(runs, start)["level"], "planned": dict(preset.rates), "added": {}}
