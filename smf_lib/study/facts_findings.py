"""The new-facts study in words (:mod:`smf_lib.study.facts_frontier` reads the numbers): the answer in one sentence,
what was found in a few, and everything that goes against SMF, each computed from the records."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .facts_frontier import (ARM_LABELS, COMPARED, LEARN, MEASURES, MIN_RATES, at_level, changes_at_level, compare,
                             learning_ends, level_of, reads_table, resolution)
from .tables import spoken_list, verdict_cell

#: The drop in held-out NaturalQuestions F1 at matched learning that Lin et al. (2025) report, quoted, not measured.
LIN_NQ_F1_DROP = {"full": 0.89, "lora": 0.71, "smf": 0.11}
#: The SMF arms, in the order the chapter names them.
SMF_ARMS = ("smf-tfidf", "smf-kl", "smf-tfidf-sgd", "smf-kl-sgd")


def _mean(scores: dict, key: str) -> float:
    return float(np.mean(scores[key]))


def reads_sentence(table: pd.DataFrame, level: float) -> str | None:
    """The arms read between the starting model and their lowest rate (every reported rate learned more than the
    level), and those that never reach it, in words; None when every arm is read between two of its own runs."""
    parts = []
    start = table[table["from start"]]
    for arm, g in start.groupby("arm", sort=False):
        parts.append(f"{ARM_LABELS.get(arm, arm)}'s lowest rate, {g['above'].iloc[0]:g}, already learned "
                     f"{', '.join(f'{v:+.2f}' for v in g['learning above'])} nats (seed{'s' if len(g) > 1 else ''} "
                     f"{', '.join(map(str, g['seed']))}), more than the level, so it is read on the straight line "
                     "from the starting model to that run")
    short = table[table["above"].isna()]
    for arm, g in short.groupby("arm", sort=False):
        parts.append(f"{ARM_LABELS.get(arm, arm)} never reaches the level (at most "
                     f"{g['learning below'].max():+.2f} nats) and is not compared")
    if not parts:
        return None
    return f"At the level ({level:+.2f} nats): " + "; ".join(parts) + "."


def _signed(x: float, digits: int = 3) -> str:
    return f"{x:+.{digits}f}"


def findings(runs: list[dict], start: dict, seeds=(0, 1), level: float | None = None) -> list[str]:
    """The chapter's answer, in at most five sentences computed from the records: what the start knew, how far
    each arm learned, and SMF against LoRA and full finetuning at equal learning (``level``; by default the runs'
    own common level) on held-out chat, then SMF-TF-IDF on the other probes, then every other verdict against SMF
    (:func:`against_smf`)."""
    n_q = len(start[LEARN])
    base_em = float(np.mean(start["facts_em"]))
    out = [f"The starting model answers {base_em:.0%} of the {n_q} held-out questions about the facts exactly "
           f"(answer log-likelihood {_mean(start, LEARN):.2f} nats per token): it does not know them."]
    ends = learning_ends(runs, start)
    if ends.empty:
        return out
    best = ends.groupby("arm")["learning"].agg(["min", "max"])
    top = max(runs, key=lambda r: float(np.mean(r["scores"].get("facts_em", [0]))))
    out.append("Learning (answer log-likelihood gain, nats per token) by arm over its rates: " + "; ".join(
        f"{ARM_LABELS.get(a, a)} {r['min']:+.2f}" + (f" to {r['max']:+.2f}" if f"{r['max']:+.2f}" != f"{r['min']:+.2f}"
                                                      else "") for a, r in best.iterrows())
        + f"; the most any run answers exactly is {np.mean(top['scores'].get('facts_em', [0])):.0%} of the questions "
        f"({ARM_LABELS.get(top['arm'], top['arm'])} at {top['lr']:g}).")
    if level is None:
        found = level_of(runs, start)
        level = found["level"]
        if found["left_out"]:
            out[-1] += (" " + ", ".join(ARM_LABELS.get(a, a) for a in found["left_out"])
                        + f" ran at fewer than {MIN_RATES} rates: too few to place on the frontier, left out below.")
    if level is None:
        out.append("The arms' ranges of learning do not overlap, so no level of learning is common to all of them "
                   "and they cannot be compared at equal learning: the sweep needs rates that bracket each other.")
        return out
    arms = set(ends["arm"])
    table = compare(runs, start, level, smf=tuple(a for a in ("smf-tfidf", "smf-kl") if a in arms),
                    baselines=tuple(a for a in ("lora", "full") if a in arms), seeds=seeds)
    chat = table[table["probe"] == "chat_loglik"].to_dict("records")
    parts = [f"{ARM_LABELS[r['smf']]} against {ARM_LABELS[r['baseline']]}: {r['verdict']} "
             f"({verdict_cell(r, unit='nats')})" for r in chat]
    short = [a for a in COMPARED if a in arms and all(at_level(runs, start, a, sd, level) is None for sd in seeds)]
    if parts or short:
        out.append(f"At equal learning ({level:+.2f} nats), held-out chat log-likelihood, SMF minus baseline: "
                   + ("; ".join(parts) if parts else "no pair to compare")
                   + (f" ({', '.join(ARM_LABELS[a] for a in short)} did not reach that level)" if short else "")
                   + ".")
    other = table[(table["probe"] != "chat_loglik") & (table["smf"] == "smf-tfidf")]
    if len(other):
        words = {"worse": "did worse on", "better": "did better on", "cannot tell": "could not be told apart on"}
        parts = []
        for b, g in other.groupby("baseline", sort=False):
            said = [f"{words[v]} " + " and ".join(MEASURES[m][1].split(" (")[0] for m in g[g["verdict"] == v]["probe"])
                    for v in ("worse", "better", "cannot tell") if (g["verdict"] == v).any()]
            parts.append(f"against {ARM_LABELS[b]} it " + ", ".join(said))
        n_seeds = int(other["seeds"].min())
        out.append(f"On the other probes at that level ({n_seeds} seed{'s' if n_seeds > 1 else ''}), SMF-TF-IDF: "
                   + "; ".join(parts) + ".")
    also = against_smf(runs, start, level, seeds)
    return out + ([also] if also else [])


def answer(runs: list[dict], start: dict, seeds=(0, 1), split: str = "dev", level: float | None = None
           ) -> str | None:
    """The new-facts study's answer in one sentence: SMF-TF-IDF (Lin et al.'s selector) against LoRA and full
    finetuning on held-out chat at equal learning (``level``; by default the runs' own common level), or None where
    there is no level or no arm pair reaches it."""
    level = level_of(runs, start)["level"] if level is None else level
    if level is None:
        return None
    arms = {r["arm"] for r in runs}
    table = compare(runs, start, level, smf=("smf-tfidf",), baselines=tuple(a for a in ("lora", "full") if a in arms),
                    seeds=seeds, probes=("chat_loglik",))
    rows = table.to_dict("records")
    if not rows:
        return None
    words = {"better": "did better on held-out chat than", "worse": "did worse on held-out chat than",
             "cannot tell": "could not be told apart on held-out chat from"}
    again = {"better": "did better than", "worse": "did worse than", "cannot tell": "could not be told apart from"}
    parts = [f"{words[rows[0]['verdict']]} {ARM_LABELS[rows[0]['baseline']]} ({verdict_cell(rows[0], unit='nats')})"]
    for r in rows[1:]:  # the probe is said once; a second baseline with the same verdict joins the first
        same = r["verdict"] == rows[0]["verdict"]
        parts.append(("or " if same and r["verdict"] == "cannot tell" else "" if same else again[r["verdict"]] + " ")
                     + f"{ARM_LABELS[r['baseline']]} ({verdict_cell(r, unit='nats')})")
    n_seeds = int(table["seeds"].min())
    where = {"dev": "dev facts", "report": "reported facts"}.get(split, split)
    reads = reads_table(runs, start, level, ("smf-tfidf", *table["baseline"].unique()), seeds)
    lined = [ARM_LABELS[a] for a in reads.loc[reads["from start"], "arm"].unique()]
    their = "their" if len(lined) > 1 else "its"
    caveat = (f" ({' and '.join(lined)} read on the line from the starting model: {their} lowest rate already "
              "learned more)" if lined else "")
    return (f"Taught new facts one at a time ({where}, {n_seeds} seed{'s' if n_seeds > 1 else ''}), at equal "
            f"learning ({level:+.2f} nats of answer log-likelihood) SMF-TF-IDF " + parts[0]
            + "".join((" " if p.startswith("or ") else " and ") + p for p in parts[1:]) + caveat + ".")


def example_sentence(runs: list[dict], start: dict, item: int, what: str = "the running example") -> str | None:
    """What the stream did to one reported MedMCQA question (index ``item`` of the probe's items): its gold margin
    at the start and each arm's change (the range over its runs), in one sentence; None without reported runs."""
    runs = [r for r in runs if r.get("split") == "report"]
    margins = start.get("medmcqa_gold_margin") or []
    if not runs or item >= len(margins):
        return None
    base = float(margins[item])
    by: dict[str, list[float]] = {}
    for r in runs:
        by.setdefault(r["arm"], []).append(float(r["scores"]["medmcqa_gold_margin"][item]) - base)

    def span(v):
        lo, hi = min(v), max(v)
        return f"{lo:+.3f}" if abs(hi - lo) < 5e-4 else f"{lo:+.3f} to {hi:+.3f}"

    return (f"On {what} (a MedMCQA question no run trains on), the gold option's margin over the best distractor "
            f"starts at {base:+.3f} nats; the stream of facts moved it by " + ", ".join(
                f"{span(v)} under {ARM_LABELS.get(a, a)}" for a, v in by.items())
            + " (each arm over its reported rates and seeds, not at equal learning).")


def against_smf(runs: list[dict], start: dict, level: float, seeds=(0, 1), said=(("smf-tfidf", None),
                ("smf-kl", "chat_loglik"))) -> str | None:
    """Every verdict against SMF at ``level`` that :func:`findings` does not already give: each SMF arm (with
    Adam and with plain SGD) that did worse than LoRA or full finetuning on a probe, with its interval; ``said``
    lists the (arm, probe) pairs already given (``None``: every probe). None when no SMF arm ran."""
    arms = {r["arm"] for r in runs}
    smf = tuple(a for a in SMF_ARMS if a in arms)
    baselines = tuple(a for a in ("lora", "full") if a in arms)
    if not smf or not baselines:
        return None
    table = compare(runs, start, level, smf=smf, baselines=baselines, seeds=seeds)
    done = table.apply(lambda r: any(r["smf"] == a and p in (None, r["probe"]) for a, p in said), axis=1)
    rest = table[~done] if len(table) else table
    worse = rest[rest["verdict"] == "worse"] if len(rest) else rest
    if not len(worse):
        return ("Nothing else at that level went against SMF: no SMF arm, with Adam or plain SGD, did worse than a "
                "baseline on any other probe." if len(rest) else None)
    parts = []
    for (a, b), g in worse.groupby(["smf", "baseline"], sort=False):
        said = [f"{MEASURES[r['probe']][1].split(' (')[0]} ({verdict_cell(r)})" for r in g.to_dict("records")]
        parts.append(f"{ARM_LABELS[a]} did worse than {ARM_LABELS[b]} on "
                     + spoken_list(said))
    return "Also against SMF at that level: " + "; ".join(parts) + "."


def paper_sentence(runs: list[dict], start: dict, level: float, seeds=(0, 1), probe: str = "triviaqa_gold_loglik"
                   ) -> str | None:
    """This study set beside Lin et al.'s published result (:data:`LIN_NQ_F1_DROP`), on the probe nearest theirs
    (TriviaQA's gold answers: world-knowledge questions the stream never asks): each of SMF-TF-IDF, LoRA and full
    finetuning's change at ``level``, whether the probe resolves it (:func:`~smf_lib.study.facts_frontier.resolution`)
    and SMF-TF-IDF against each baseline. None where an arm does not reach the level."""
    moved = changes_at_level(runs, start, level, seeds, (probe,)).set_index("arm")["change"]
    if not {"smf-tfidf", "lora", "full"} <= set(moved.index):
        return None
    hw = float(resolution(runs, (probe,))["half-width"].iloc[0])
    name = {"triviaqa_gold_loglik": "the log-likelihood of TriviaQA's gold answers"}.get(probe, MEASURES[probe][1])
    lost = [a for a in ("lora", "full") if moved[a] < -hw]
    table = compare(runs, start, level, smf=("smf-tfidf",), baselines=("lora", "full"), seeds=seeds, probes=(probe,))
    said = {"better": "kept more than", "worse": "lost more than", "cannot tell": "could not be told apart from"}
    versus = " and ".join(f"{said[r['verdict']]} {ARM_LABELS[r['baseline']]} ({verdict_cell(r)})"
                          for r in table.to_dict("records"))
    pct = LIN_NQ_F1_DROP
    return (f"Lin et al. measure forgetting as the drop in held-out NaturalQuestions F1 at matched learning: "
            f"{pct['full']:.0%} under full finetuning, {pct['lora']:.0%} under LoRA, {pct['smf']:.0%} under SMF. The "
            f"nearest probe here is {name}, questions about the world that the stream never asks. At the level it "
            f"changed by {moved['smf-tfidf']:+.3f} nats under SMF-TF-IDF, {moved['lora']:+.3f} under LoRA and "
            f"{moved['full']:+.3f} under full finetuning (the probe resolves about {hw:.3f}), and SMF-TF-IDF "
            + versus + ". "
            + (f"{' and '.join(ARM_LABELS[a] for a in lost)} lost world knowledge measurably, the setting in which "
               "the paper's contrast can show." if lost else
               "Neither baseline lost world knowledge measurably at this level, so the paper's contrast cannot show "
               "here: it needs a level of learning at which the baselines forget."))


def provenance_sentence(runs: list[dict]) -> str:
    """Which code made the runs (each record names its commit and whether the tree was clean when it started) and,
    where some started from a remade starting memory (a new checkout keeps the records, not the weights), how close
    that memory is to the recorded one: its retrofit loss at every step, and its scores on the runs' split."""
    clean = sum(bool((r.get("code") or {}).get("git_clean")) for r in runs)
    commits = {(r.get("code") or {}).get("git_commit") for r in runs} - {None}
    out = (f"{clean} of {len(runs)} runs started from a commit with a clean tree ({len(commits)} commit"
           f"{'s' if len(commits) != 1 else ''} in all; each record names its own).")
    remade = [r for r in runs if r.get("start_made_again")]
    if remade:
        loss = max(r["start_made_again"]["max_loss_difference"] for r in remade)
        offsets = {k: max(abs(r["start_made_again"]["offsets"][k]) for r in remade)
                   for k in remade[0]["start_made_again"]["offsets"]}
        widths = {k: float(np.median([(r["changes"][k]["hi"] - r["changes"][k]["lo"]) / 2 for r in runs
                                      if k in r.get("changes", {})])) for k in offsets}
        share = max(offsets[k] / widths[k] for k in offsets if widths.get(k))
        out += (f" {len(remade)} of them ({spoken_list([r['run'] for r in remade])}) started from the starting "
                f"memory made again on a new checkout, which keeps the records but not the weights: its retrofit "
                f"loss lies within {loss:.0e} nats of the recorded one at every step, and its mean score on each "
                f"measure within {max(offsets.values()):.0e} of the recorded start's, at most {share:.0%} of the "
                "half-width of that measure's interval.")
    return out
