"""The plain answers the book opens with, computed from the result files (no number is typed by hand)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import read_json
from ..probes import metrics as probe_metrics
from .records import is_report
from .tables import interval_cell


def _ci(row, metric: str, scale: float = 1.0, digits: int = 1) -> str:
    return interval_cell(*(row[f"d_{metric}{s}"] * scale for s in ("", "_lo", "_hi")), digits=digits)


def pilot_choice(pilot_folder: str | Path, min_share: float = 0.10) -> dict | None:
    """The retrofit pilot's cheapest recipe (fewest steps, then fewest seconds) whose memory carries ``min_share`` of
    the MLP's output at every layer with a held-out loss gain whose interval excludes 0: its name, the step it got
    there, and its final health."""
    best = None
    for path in sorted(Path(pilot_folder).glob("*.json")):
        rec = read_json(path)
        for p in rec["trajectory"]:
            if p["min_share"] >= min_share and p["loss_change"]["hi"] < 0:
                cand = {"recipe": rec["recipe"], "init": rec["init"], "lr": rec["lr"], "step": p["step"],
                        "seconds": p["train_seconds"], "min_share": p["min_share"], "share": p["share"],
                        "loss_change": p["loss_change"], "final": rec["trajectory"][-1],
                        "steps": rec["trajectory"][-1]["step"]}
                if best is None or (cand["step"], cand["seconds"]) < (best["step"], best["seconds"]):
                    best = cand
                break
    return best


def findings_v1(summary, runs: list[dict], pilot_folder: str | Path | None = None) -> list[str]:
    """What the first cpu study (``results/cpu-v1``) found, in 3-5 sentences, including what goes against SMF.

    Args:
        summary: its summary table (:func:`~smf_lib.study.results.load_results`).
        runs: its run records.
        pilot_folder: the retrofit pilot's folder (``results/retrofit-pilot``), if it exists.
    """
    out = []
    retro = next(r for r in runs if r["method"] == "retrofit")
    share = retro["retrofit"]["heldout_oasst1"]["after"]["memory_to_mlp_norm"]
    base = next(r for r in runs if r["method"] == "base")
    full = summary[summary["method"].isin(["smf-kl", "lora", "full"])]
    smf = full[(full["method"] == "smf-kl") & (full["seed"].astype(str) == "0")].iloc[0]
    smf_run = next(r for r in runs if r["method"] == "smf-kl" and r["seed"] == 0 and is_report(r)
                   and r.get("train_config", {}).get("lr") == smf["lr"])
    changed = int(np.sum(np.asarray(smf_run["items"]["medmcqa_pred"]) != np.asarray(base["items"]["medmcqa_pred"])))
    n = len(base["items"]["medmcqa_pred"])
    out.append(f"The first study's memory was nearly silent: after its retrofit it added {share:.1%} of the MLP's "
               f"output, so SMF-KL changed {changed} of {n:,} MedMCQA answers (accuracy "
               f"{_ci(smf, 'medmcqa_acc', 100)} points) and cannot test the paper's claim.")
    lora = full[full["method"] == "lora"]
    fft = full[full["method"] == "full"]
    preds = np.asarray(base["items"]["medmcqa_pred"])
    a_share, a_gold = float(np.mean(preds == 0)), float(base["metrics"]["medmcqa_always_a_acc"])
    worst = min(pd_rows(lora) + pd_rows(fft), key=lambda r: r["d_medmcqa_acc"])
    worst_run = next(r for r in runs if r["method"] == worst["method"] and str(r.get("seed")) == str(worst["seed"])
                     and is_report(r) and r.get("train_config", {}).get("lr") == worst["lr"])
    worst_a = float(np.mean(np.asarray(worst_run["items"]["medmcqa_pred"]) == 0))
    out.append(f"LoRA and full finetuning learned the answer format (gold-option log-likelihood "
               f"{_ci(lora.iloc[0], 'medmcqa_gold_loglik', 1, 2)} nats for LoRA) but gained no accuracy: their "
               f"changes run down to {_ci(worst, 'medmcqa_acc', 100)} points. The base model answers A on "
               f"{a_share:.0%} of the reported items, where A is right on {a_gold:.0%}; after training "
               f"({worst['method']}, seed {worst['seed']}) A is its answer on {worst_a:.0%}, so part of the drop is "
               "the letter prior lost, not knowledge lost.")
    retention = [m for m in ("wikitext_ppl", "chat_loglik", "triviaqa_acc") if f"d_{m}_lo" in full]
    better = {m: probe_metrics()[m].better for m in retention}  # +1: up is better; -1: down is better
    worse = sum(1 for _, r in full.iterrows() for m in retention
                if (r[f"d_{m}_hi"] < 0 if better[m] > 0 else r[f"d_{m}_lo"] > 0))
    chat_half = float(np.nanmedian((full["d_chat_loglik_hi"] - full["d_chat_loglik_lo"]) / 2))
    out.append(f"On the reported items no method got clearly worse on a retention probe ({worse} of "
               f"{len(full) * len(retention)} verdicts), but the chat probe's interval half-width is about "
               f"{chat_half:.3f} nats on {len(base['items']['chat_loglik'])} replies: too wide to see small "
               "forgetting.")
    if pilot_folder is not None and Path(pilot_folder).exists():
        choice = pilot_choice(pilot_folder)
        if choice:
            lc = choice["loss_change"]
            out.append(f"A retrofit pilot found a living memory: with {choice['init']} values at rate "
                       f"{choice['lr']:g}, every memory layer carried at least {choice['min_share']:.0%} of its MLP's "
                       f"output after {choice['step']} steps of 16 replies, and the loss on held-out "
                       f"replies fell by {-lc['delta']:.3f} [{-lc['hi']:.3f}, {-lc['lo']:.3f}] nats; the "
                       "cpu study runs on that recipe.")
    return out


def pd_rows(df) -> list:
    """The rows of a DataFrame, as Series."""
    return [r for _, r in df.iterrows()]


def pilot_answer(pilot_folder: str | Path, min_share: float = 0.10) -> list[str]:
    """The retrofit pilot in plain sentences: does the init matter, does the rate, and which recipe is chosen."""
    from .pilot import pilot_table

    t = pilot_table(pilot_folder)
    if not len(t):
        return ["The retrofit pilot has no finished recipe yet."]
    last = t.sort_values("step").groupby("recipe").tail(1).set_index("recipe")
    out = []
    for lr, g in last.groupby("lr"):
        if g["init"].nunique() > 1:
            shares = ", ".join(f"{r.init} {r.min_share:.0%}" for r in g.itertuples())
            spread = g["min_share"].max() - g["min_share"].min()
            out.append(f"At rate {lr:g}, the inits end with their smallest layer's share at {shares} after "
                       f"{int(g['step'].max())} steps: {'within' if spread < 0.05 else 'apart by'} "
                       f"{spread * 100:.0f} points.")
    first = {}
    for recipe, g in t.groupby("recipe"):
        ok = g[(g["min_share"] >= min_share) & (g["loss_hi"] < 0)].sort_values("step")
        first[recipe] = int(ok["step"].iloc[0]) if len(ok) else None
    reached = {r: s for r, s in first.items() if s is not None}
    never = sorted(r for r, s in first.items() if s is None)
    if reached:
        out.append("Steps until every layer carries " f"{min_share:.0%} with a held-out gain: "
                   + ", ".join(f"{r} {s}" for r, s in sorted(reached.items(), key=lambda kv: kv[1]))
                   + (f"; never within the run: {', '.join(never)}" if never else "") + ".")
    choice = pilot_choice(pilot_folder, min_share)
    if choice:
        from .presets import get_preset

        p = get_preset("cpu")
        cfg = p.retrofit_config(0)
        steps = p.retrofit_n // (cfg.micro_batch * cfg.grad_accum)
        out.append(f"The cheapest is {choice['recipe']} ({choice['step']} steps); the cpu preset retrofits with "
                   f"{p.memory.get('init', 'zero')} values at {p.lr['retrofit']:g} for {steps} steps of "
                   f"{cfg.micro_batch * cfg.grad_accum} replies (its own retrofit record "
                   "measures the share that shorter schedule reaches).")
    return out


def learning_answer(pilot_folder: str | Path) -> list[str]:
    """SMF's learning by retrofit checkpoint in plain sentences (:func:`smf_lib.study.pilot.learning_table`)."""
    from .pilot import learning_table

    t = learning_table(pilot_folder)
    if not len(t):
        return ["SMF's learning by retrofit checkpoint has not been measured yet."]
    t = t.sort_values("share")
    parts = [f"at {r.share:.1%} (retrofit step {r.retrofit_step}) {r.d_gold_margin:+.3f} "
             f"[{r.d_gold_margin_lo:+.3f}, {r.d_gold_margin_hi:+.3f}] nats, {r.changed} "
             f"answer{'' if r.changed == 1 else 's'} changed"
             for r in t.itertuples()]
    low, high = t.iloc[0], t.iloc[-1]
    resolved = "apart" if low.d_gold_margin_hi < high.d_gold_margin_lo else "overlapping"
    return [f"The same short SMF-KL run moved the gold margin on dev items by: {'; '.join(parts)}.",
            f"From the quietest checkpoint measured to the most active one the intervals are {resolved}."]


def _cell(row, metric: str, scale: float = 1.0, digits: int = 2) -> str:
    return interval_cell(*(row[f"{metric}{s}"] * scale for s in ("", "_lo", "_hi")), digits=digits)


def findings_cpu(runs: list[dict], planned: int | None = None, first_share: float | None = None) -> list[str]:
    """What the living-memory study (``results/cpu-v2``) found, in at most 5 sentences computed from its run records,
    including what goes against SMF: the memory's health and the retrofit's own change, the dev items where SMF's
    rate was matched, the reported items (:func:`reported_findings`), and what is still to come while it runs.

    Args:
        runs: the study's run records (:func:`~smf_lib.study.results.load_results`).
        planned: how many runs the preset plans, to say how many are still to come.
        first_share: the first study's memory share of the MLP's output, for contrast.
    """
    from .results import net_table

    net = net_table(runs)
    out = [s for s in (_health_sentence(runs, net, first_share), _dev_match_sentence(runs)) if s]
    reported = reported_findings(net)
    done = sum(1 for r in runs if is_report(r))
    if reported:
        out.extend(reported[:2])
        if planned is not None and done < planned:
            out.append(f"{planned - done} of the study's {planned} fully evaluated runs are still to come; every "
                       "sentence here is recomputed from the result files when they land.")
    elif planned is not None:
        out.append(f"The comparison on the reported items is not in yet: {done} of the study's {planned} fully "
                   "evaluated runs are finished.")
    return out


def _health_sentence(runs: list[dict], net, first_share: float | None) -> str | None:
    """The memory's health after the retrofit and the retrofit's own change, or None before it has run."""
    retro = [r for r in runs if r["method"] == "retrofit" and is_report(r)]
    if not retro:
        return None
    after = retro[0]["retrofit"]["heldout_oasst1"]["after"]
    lowest = min(after["share_by_layer"].values())
    was = f"; the first study's: {first_share:.1%}" if first_share is not None else ""
    text = (f"The memory is alive: after the retrofit its quietest layer adds {lowest:.0%} of the MLP's output "
            f"(the mean over layers {after['share']:.0%}{was})")
    r0 = net[net["method"] == "retrofit"]
    if len(r0):
        r = r0.iloc[0]
        text += (f", and the retrofit alone moves the model (reported chat log-likelihood "
                 f"{_cell(r, 'd_chat_loglik', 1, 3)} nats, WikiText perplexity {_cell(r, 'd_wikitext_ppl', 1, 2)}), "
                 "so SMF's changes are read from the retrofitted model")
    return text + "."


def _dev_match_sentence(runs: list[dict]) -> str | None:
    """Where SMF-KL's dev learning met the baselines' and what its chat did there, or None without trajectories."""
    from .results import end_points, matched_learning, trajectory_table

    traj = trajectory_table(runs, against="start")
    if not len(traj):
        return None
    chat = "d_chat_loglik" in traj
    ends = end_points(traj, ("d_medmcqa_gold_margin", *(("d_chat_loglik",) if chat else ())))
    match = matched_learning(traj)
    match = match[match["smf"] == "smf-kl"] if len(match) else match
    if not len(match):
        return None

    def point(method, lr):
        return ends[(ends["method"] == method) & (ends["lr"] == lr)].iloc[0]

    rate = match["smf lr"].iloc[0]
    smf = point("smf-kl", rate)
    met = [NAMES[b] for b, ok in zip(match["baseline"], match["matched"]) if ok]
    others = [point(b, lr) for b, lr in zip(match["baseline"], match["baseline lr"])]
    text = (f"On dev items, SMF-KL at {rate:g} "
            + (f"had a learning interval that overlapped those of {' and '.join(met)}" if met
               else "came closest to the baselines' learning")
            + f" (gold margin {_cell(smf, 'd_medmcqa_gold_margin', 1, 3)} against "
            + " and ".join(f"{_cell(o, 'd_medmcqa_gold_margin', 1, 3)} for {NAMES[o['method']]}" for o in others)
            + ")")
    if chat:
        text += (f", and its chat log-likelihood moved by {_cell(smf, 'd_chat_loglik', 1, 3)} nats against "
                 + " and ".join(_cell(o, "d_chat_loglik", 1, 3) for o in others))
    return text + "; the study trains SMF at that rate."


def caveats_cpu_v2(runs: list[dict], spread_folder: str | Path) -> list[str]:
    """What the second cpu study's verdict cannot carry, computed from its records and the spread pilot's: its
    memory had collapsed, its arms started from different models, and read at equal dev learning along the
    trajectories the selectors do not all lose to the baselines."""
    from .frontier import compare_at_level, final_learning, reachable_level
    from .results import net_table

    out = []
    trained = Path(spread_folder) / "trained.json"
    if trained.exists():
        layers = read_json(trained)["trajectory"]
        first, last = layers[0]["spread"]["layers"], layers[-1]["spread"]["layers"]
        ratio = [last[k]["general_effective_rows"] / first[k]["general_effective_rows"] for k in last]
        shared = [last[k]["overlap"] for k in last]
        out.append(f"Its memory had collapsed: its retrofit (the paper's: the query and keys train) leaves the reads "
                   f"spread over {min(ratio):.0%} to {max(ratio):.0%} as many rows as random addressing's, and "
                   f"{min(shared):.0%} to {max(shared):.0%} of a question's rows are rows a general paragraph "
                   "reads too (the spread pilot, chapter 2).")
    net = net_table(runs)
    r0 = net[net["method"] == "retrofit"]
    if len(r0):
        out.append("Its arms started from different models: SMF from the retrofit, which alone moved held-out chat "
                   f"log-likelihood by {_cell(r0.iloc[0], 'd_chat_loglik', 1, 3)} nats, LoRA and full finetuning "
                   "from the base model.")
    arms = ("smf-kl", "smf-tfidf", "lora", "full")
    level = reachable_level(final_learning(runs, arms))
    if level is not None:
        table = compare_at_level(runs, level, baselines=("lora",), metrics=("chat_loglik",))
        parts = [f"{NAMES[r['smf']]} {r['difference']:+.3f} [{r['lo']:+.3f}, {r['hi']:+.3f}] ({r['verdict']})"
                 for _, r in table.iterrows()]
        traj = next((r["trajectory"] for r in runs if r["method"] == "smf-kl" and r.get("trajectory")), [])
        if parts and traj:
            out.append(f"Read at equal dev learning ({level:.2f} nats of gold margin, interpolated along each run's "
                       "trajectory), held-out chat log-likelihood against LoRA's: " + "; ".join(parts)
                       + f" nats, SMF minus LoRA, from {len(traj)}-point trajectories on "
                       f"{len(traj[-1]['items']['chat_loglik'])} dev chat replies.")
    return out


NAMES = {"smf-kl": "SMF-KL", "smf-tfidf": "SMF-TF-IDF", "lora": "LoRA", "full": "full finetuning",
         "lora-mem": "LoRA (same start)", "full-mem": "full finetuning (same start)"}
#: A verdict of SMF minus a baseline on a retention probe, as words about SMF.
_KEPT = {"better": "kept more held-out chat than", "worse": "lost more held-out chat than",
         "cannot tell": "could not be told apart on held-out chat from"}


def answer_cpu_v2(runs: list[dict]) -> str | None:
    """The MedMCQA study's answer in one sentence, computed from its records: each selector against LoRA on
    held-out chat at equal dev learning (:func:`caveats_cpu_v2` gives the detail), and why it is not the method's
    verdict."""
    from .frontier import compare_at_level, final_learning, reachable_level

    level = reachable_level(final_learning(runs, ("smf-kl", "smf-tfidf", "lora", "full")))
    if level is None:
        return None
    table = compare_at_level(runs, level, baselines=("lora",), metrics=("chat_loglik",))
    parts = [f"{NAMES[r['smf']]} {_KEPT[r['verdict']]} LoRA ({r['difference']:+.3f} [{r['lo']:+.3f}, "
             f"{r['hi']:+.3f}] nats)" for _, r in table.iterrows()]
    return (f"On MedMCQA, read at equal learning on dev items ({level:.2f} nats of gold margin), " + " and ".join(parts)
            + "; that study's memory had collapsed and its arms started from different models, so it cannot carry "
            "a verdict on the method.")


def _relation(a_lo: float, a_hi: float, b_lo: float, b_hi: float) -> str:
    """Where interval a lies against interval b: ``"below"``, ``"above"`` or ``"overlaps"``."""
    return "below" if a_hi < b_lo else "above" if a_lo > b_hi else "overlaps"


def reported_findings(net, smf=("smf-kl", "smf-tfidf"), baselines=("lora", "full")) -> list[str]:
    """The study's answer on the reported items, in sentences computed from :func:`~smf_lib.study.results.net_table`
    (every change from the model the run started from; several seeds pooled: the mean, and the union of their
    intervals): each SMF arm's learning (gold margin) against each baseline's, so it says whether the rate matched
    on dev items still matches here; its change in held-out chat log-likelihood against theirs; and which methods
    got worse on WikiText perplexity and TriviaQA accuracy (an interval wholly on the worse side)."""
    from .results import pooled

    want = ("d_medmcqa_gold_margin", "d_chat_loglik", "d_wikitext_ppl", "d_triviaqa_acc")
    if net is None or not len(net) or any(m not in net for m in want[:2]):
        return []
    rows = net[net["method"].isin([*smf, *baselines])]
    table = pooled(rows, tuple(m for m in want if m in net)).drop_duplicates("method").set_index("method")
    arms = [m for m in smf if m in table.index]
    base = [m for m in baselines if m in table.index]
    if not arms or not base:
        return []

    seeds = int(table.loc[arms + base, "seeds"].min())
    out = []
    for arm in arms:
        out += _arm_sentences(table, arm, base, seeds)
    worse_line = _worse_sentence(table)
    return out + ([worse_line] if worse_line else [])


def _interval(table, method, metric, digits=3, scale=1.0) -> str:
    r = table.loc[method]
    return interval_cell(*(r[f"{metric}{s}"] * scale for s in ("", "_lo", "_hi")), digits=digits)


def _at(table, method) -> str:
    return f"{NAMES[method]} at {table.loc[method, 'lr']:g}"


def _arm_sentences(table, arm: str, base: list[str], seeds: int) -> list[str]:
    """One SMF arm against the baselines on the reported items: its learning, then its chat change."""
    rel = {b: _relation(*(table.loc[m, f"d_medmcqa_gold_margin{s}"] for m in (arm, b) for s in ("_lo", "_hi")))
           for b in base}
    words = {"below": "less than", "above": "more than", "overlaps": "as much as"}
    learned = (f"On the reported items ({seeds} seed{'s' if seeds > 1 else ''} per method), {_at(table, arm)} moved "
               f"the gold option's margin by {_interval(table, arm, 'd_medmcqa_gold_margin')} nats from its "
               "retrofitted start, "
               + ", ".join(f"{_at(table, b)} by {_interval(table, b, 'd_medmcqa_gold_margin')}" for b in base) + ": "
               + " and ".join(f"{words[rel[b]]} {NAMES[b]}" for b in base)
               + (" (the intervals overlap), so here the comparison is at matched learning."
                  if all(v == "overlaps" for v in rel.values()) else
                  ", so at this rate its learning does not match "
                  + ("any" if "overlaps" not in rel.values() else "every") + " baseline's on the reported items."))
    chat = {b: _relation(*(table.loc[m, f"d_chat_loglik{s}"] for m in (arm, b) for s in ("_lo", "_hi")))
            for b in base}
    lo, hi = table.loc[arm, "d_chat_loglik_lo"], table.loc[arm, "d_chat_loglik_hi"]
    moved = "fell" if hi < 0 else "rose" if lo > 0 else "did not move measurably"
    text = (f"Under {NAMES[arm]} held-out chat log-likelihood {moved} ({_interval(table, arm, 'd_chat_loglik', 4)} "
            "nats), " + ", ".join(f"under {NAMES[b]} {_interval(table, b, 'd_chat_loglik', 4)}" for b in base))
    less = all(v == "below" for v in rel.values())
    if all(v == "below" for v in chat.values()):
        text += (f": {NAMES[arm]} ends below every baseline on chat" + (
            " while learning less, so it is worse on both counts, against the paper's claim in this setting."
            if less else ", against the paper's claim in this setting."))
    elif all(v == "above" for v in chat.values()):
        text += (f": {NAMES[arm]} ends above every baseline on chat" + (
            ", but it also learned less, so this is not a comparison at equal learning and cannot say which "
            "method forgets less." if less else ", as the paper claims."))
    else:
        text += ": the intervals overlap for at least one baseline, so these items cannot rank them on chat."
    return [learned, text]


def _worse_sentence(table) -> str | None:
    """Which methods got worse on WikiText perplexity and TriviaQA accuracy (an interval wholly on the worse
    side)."""
    registry = probe_metrics()
    worse = []
    for metric in ("d_wikitext_ppl", "d_triviaqa_acc"):
        if metric not in table:
            continue
        spec = registry[metric[2:]]
        for m in table.index:
            lo, hi = table.loc[m, f"{metric}_lo"], table.loc[m, f"{metric}_hi"]
            if (hi < 0 if spec.better > 0 else lo > 0):
                worse.append(f"{NAMES.get(m, m)} on {spec.label} ({_interval(table, m, metric, 2, spec.scale)})")
    if not any(m in table for m in ("d_wikitext_ppl", "d_triviaqa_acc")):
        return None
    return "On WikiText perplexity and TriviaQA accuracy, " + (
        "worse: " + "; ".join(worse) + "." if worse else "no method got worse on these items (no interval lies "
        "wholly on the worse side).")


def answer_sentences(**points) -> str:
    """The one-figure answer in sentences: for each named set of end points (``dev=...``, ``reported=...``; rows
    with ``method``, ``lr``, ``d_medmcqa_gold_margin`` and ``d_chat_loglik``, mean over seeds), which run learned
    most and which had the best change in chat log-likelihood."""
    out = []
    for source, pts in points.items():
        if pts is None or not len(pts):
            continue
        g = pts.groupby(["method", "lr"], sort=False)[["d_medmcqa_gold_margin", "d_chat_loglik"]].mean()
        most, best = g["d_medmcqa_gold_margin"].idxmax(), g["d_chat_loglik"].idxmax()
        out.append(f"On the {source} items, {most[0]} at {most[1]:g} learned most "
                   f"({g.loc[most, 'd_medmcqa_gold_margin']:+.3f} nats of margin), and {best[0]} at {best[1]:g} had "
                   f"the best change in chat log-likelihood ({g.loc[best, 'd_chat_loglik']:+.4f} nats).")
    return " ".join(out) or "No trained run has finished yet."


def example_sentence(probs) -> str | None:
    """What training did to one question, in a sentence: the gold option's probability under the base model, the
    retrofit and each method (the range over seeds), from :func:`~smf_lib.study.results.option_probabilities`."""
    gold = probs[probs["gold"]]
    if gold.empty or "base" not in set(gold["run"]):
        return None
    by = gold.assign(method=gold["run"].str.split().str[0]).groupby("method", sort=False)["probability"]
    letter = gold["option"].iloc[0]

    def pct(method):
        lo, hi = 100 * by.min()[method], 100 * by.max()[method]
        return f"{lo:.0f}%" if round(lo) == round(hi) else f"{lo:.0f}-{hi:.0f}%"

    names = {**NAMES, "retrofit": "the retrofitted model"}
    trained = [m for m in ("smf-kl", "smf-tfidf", "lora", "full") if m in by.groups]
    if not trained:
        return None
    base, ends = 100 * by.max()["base"], [100 * by.mean()[m] for m in trained]
    how = ("every method raised it" if min(ends) > base else
           "every method lowered it (none taught the model this question)" if max(ends) < base else
           "some methods raised it and some lowered it")
    return (f"The base model gives the gold answer ({letter}) {pct('base')}"
            + (f", the retrofitted model {pct('retrofit')}" if "retrofit" in by.groups else "")
            + "; after training, " + ", ".join(f"{names[m]} {pct(m)}" for m in trained) + f": {how}.")


def selectors_apart(selectors, compared) -> dict[int, list[tuple[str, str]]]:
    """Per seed, the probes of ``compared`` on which the SMF-KL and SMF-TF-IDF runs' change intervals do not
    overlap, each with the method that did better there (``selectors``: their rows of a summary with
    ``d_<metric>``, ``_lo`` and ``_hi`` columns)."""
    registry, out = probe_metrics(), {}
    for seed in sorted(selectors["seed"].dropna().unique()):
        pair = selectors[selectors["seed"] == seed].set_index("method")
        if {"smf-kl", "smf-tfidf"} <= set(pair.index):
            kl, tf = pair.loc["smf-kl"], pair.loc["smf-tfidf"]
            out[int(seed)] = [
                (m, "smf-kl" if (kl[f"d_{m}"] - tf[f"d_{m}"]) * registry[m].better > 0 else "smf-tfidf")
                for m in compared if kl[f"d_{m}_hi"] < tf[f"d_{m}_lo"] or tf[f"d_{m}_hi"] < kl[f"d_{m}_lo"]]
    return out


def selector_answer(overlap, apart: dict[int, list[tuple[str, str]]], top_t: int = 128) -> str:
    """Chapter 4's answer in one sentence: how far KL's and TF-IDF's top-t rows agree and how many hub rows each
    keeps (``overlap``: :func:`~smf_lib.views.selection_tables.selection_overlap`), and on which probes, if any,
    the two selectors' study runs differ, and which did better (``apart``: :func:`selectors_apart`)."""
    at = overlap[overlap["top_t"] == top_t]
    rows = (f"At top-t {top_t} on the study's MedMCQA batches, KL and TF-IDF share {at['jaccard'].mean():.0%} of "
            f"their rows, and hub rows are {at['kl_hub_share'].mean():.0%} of KL's picks against "
            f"{at['tfidf_hub_share'].mean():.0%} of TF-IDF's")
    if not apart:
        return rows + "."
    labels, found = probe_metrics(), {}
    for seed, pairs in apart.items():
        for m, winner in pairs:
            found.setdefault((m, winner), []).append(seed)
    if not found:
        return rows + "; in the study the two selectors' runs could not be told apart on any probe at any seed."
    seeds = len(apart)
    parts = [f"{NAMES[w]} did better on {labels[m].label if m in labels else m} at "
             + ({2: "both seeds"}.get(seeds, f"all {seeds} seeds") if len(ss) == seeds and seeds > 1
                else "seed " + ", ".join(map(str, ss)))
             for (m, w), ss in found.items()]
    return (rows + "; in the study (each selector at the rate chosen for it on dev items) " + " and ".join(parts)
            + ", and the two could not be told apart on the other probes.")
