"""The answer of the ``cpu`` study, computed from its records: every arm from the same retrofitted model, each at the
rate whose dev learning came to the common level (:mod:`smf_lib.study.frontier`), evaluated on every reported item.

SMF minus each baseline is paired over the reported items at each seed and pooled over seeds
(:func:`~smf_lib.study.results.differences_table`); a verdict needs the pooled interval to exclude 0 and every seed to
agree (:func:`~smf_lib.study.paired_stats.seed_verdict`). Before any forgetting is read, the learning on the
reported items is checked against the equivalence margin stated before the runs: SMF minus a baseline in gold margin
is "matched" when its whole 95% interval lies within the margin.
"""

from __future__ import annotations

import pandas as pd

from .paired_stats import MATCH_MARGIN
from .tables import spoken_list, verdict_cell as _cell

SMF = ("smf-kl", "smf-tfidf")
SAME_START = ("lora-mem", "full-mem")
PAPER_VIEW = ("lora", "full")
#: What the arms learned (gold margin is the measure they are matched on) and what they kept: every probe each
#: selector gets a verdict on, in the order the book shows them.
LEARNING = ("medmcqa_gold_margin", "medmcqa_acc", "acquisition_gold_margin")
RETENTION = ("chat_loglik", "chat_drift_kl", "wikitext_ppl", "wikitext_drift_kl", "triviaqa_alias_loglik",
             "triviaqa_acc")
PROBES = LEARNING + RETENTION
WORDS = {"medmcqa_gold_margin": "MedMCQA gold margin", "medmcqa_acc": "MedMCQA accuracy",
         "acquisition_gold_margin": "trained questions' gold margin", "chat_loglik": "held-out chat log-likelihood",
         "chat_drift_kl": "drift on chat (KL)", "wikitext_ppl": "WikiText perplexity",
         "wikitext_drift_kl": "drift on WikiText (KL)", "triviaqa_alias_loglik": "TriviaQA gold-answer log-likelihood",
         "triviaqa_acc": "TriviaQA accuracy"}
NAMES = {"smf-kl": "SMF-KL", "smf-tfidf": "SMF-TF-IDF", "lora-mem": "LoRA", "full-mem": "full finetuning",
         "lora": "LoRA from the base model", "full": "full finetuning from the base model"}


def verdict_table(runs: list[dict], baselines=SAME_START, probes=PROBES) -> pd.DataFrame:
    """Per selector, baseline and probe: SMF minus the baseline on the reported items, pooled over the seeds both
    ran at (one seed: that seed's row), its 95% interval over items, each seed's own difference and the verdict."""
    from .results import differences_table

    diff = differences_table(runs, SMF, baselines)
    rows = []
    for smf in SMF:
        for base in baselines:
            for metric in probes:
                g = diff[(diff["smf"] == smf) & (diff["baseline"] == base) & (diff["metric"] == metric)]
                if not len(g):
                    continue
                seeds = g[g["seed"] != "all"]
                row = g[g["seed"] == "all"].iloc[0] if (g["seed"] == "all").any() else seeds.iloc[0]
                rows.append({"smf": smf, "baseline": base, "metric": metric, "difference": row["difference"],
                             "lo": row["lo"], "hi": row["hi"], "seeds": len(seeds),
                             "per seed": [float(v) for v in seeds["difference"]], "verdict": row["verdict"]})
    return pd.DataFrame(rows, columns=["smf", "baseline", "metric", "difference", "lo", "hi", "seeds", "per seed",
                                       "verdict"])


def _kept(verdict: str, probe: bool = True) -> str:
    """The verdict on held-out chat in words; ``probe=False`` leaves the probe out (said once already)."""
    return ({"better": "kept more held-out chat than", "worse": "lost more held-out chat than",
             "cannot tell": "could not be told apart on held-out chat from"} if probe else
            {"better": "kept more than", "worse": "lost more than", "cannot tell": "could not be told apart from"}
            )[verdict]


def matched(row, margin: float = MATCH_MARGIN) -> bool:
    """Whether SMF minus a baseline in gold margin (a verdict-table row) is within the equivalence margin: its whole
    95% interval inside [-margin, +margin]."""
    return row["lo"] >= -margin and row["hi"] <= margin


def _learned(row) -> str:
    """SMF against the baseline in gold margin, in words with the interval."""
    how = "learned more than" if row["difference"] > 0 else "learned less than"
    return f"{NAMES[row['smf']]} {how} {NAMES[row['baseline']]} ({_cell(row, unit='nats of gold margin')})"


def answer(runs: list[dict], level: float | None, unmatched=(), margin: float = MATCH_MARGIN) -> str | None:
    """The study's answer in one sentence: each selector against each same-start baseline on held-out chat, on the
    reported items, at the level of dev learning the rates were chosen at (``unmatched``: arms whose chosen rate
    missed it by more than ``margin``); None before those runs are in."""
    table = verdict_table(runs, SAME_START, ("chat_loglik", "medmcqa_gold_margin"))
    chat = table[table["metric"] == "chat_loglik"]
    if not len(chat):
        return None
    learn = {(r["smf"], r["baseline"]): r for r in table[table["metric"] == "medmcqa_gold_margin"].to_dict("records")}
    parts, apart = [], []
    for smf, g in chat.groupby("smf", sort=False):
        said = []
        for k, r in enumerate(g.to_dict("records")):
            same = k and r["verdict"] == g.iloc[0]["verdict"]
            said.append(("or " if same and r["verdict"] == "cannot tell" else "" if same else _kept(r["verdict"], not k)
                         + " ") + f"{NAMES[r['baseline']]} ({_cell(r, unit='nats')}"
                        + ("; one seed)" if r["seeds"] == 1 else ")"))
            pair = learn.get((smf, r["baseline"]))
            if pair is not None and not matched(pair, margin):
                apart.append(_learned(pair))
        parts.append(f"{NAMES[smf]} " + said[0] + "".join((" " if x.startswith("or ") else " and ") + x
                                                          for x in said[1:]))
    at = ""
    if level is not None:
        off = f"; {', '.join(NAMES[a] for a in unmatched)} outside the {margin:g}-nat margin" if unmatched else ""
        at = f" ({level:+.3f} nats of gold margin on dev questions{off})"
    caveat = (f" On the reported items the learning did not stay within the {margin:g}-nat margin: "
              + "; ".join(apart) + "; there the forgetting is compared at unequal learning." if apart else "")
    return ("Trained on MedMCQA, with every method started from the same model and brought to the same learning" + at
            + ", " + "; ".join(parts) + "." + caveat)


def learning_sentence(table: pd.DataFrame, margin: float = MATCH_MARGIN) -> str | None:
    """Whether the arms stayed matched on the reported items: SMF minus each baseline in gold margin against the
    equivalence margin (matched: the whole interval within it)."""
    rows = table[table["metric"] == "medmcqa_gold_margin"]
    if not len(rows):
        return None
    inside = rows[rows.apply(lambda r: matched(r, margin), axis=1)]
    outside = rows.drop(inside.index)
    rule = f"SMF minus the baseline in gold margin, its whole interval within {margin:g} nats"
    pairs = ", ".join(f"{NAMES[r['smf']]} against {NAMES[r['baseline']]}" for _, r in inside.iterrows())
    if not len(outside):
        return f"On the reported items the learning stayed matched ({rule}) for every pair: {pairs}."
    missed = "; ".join(_learned(r) for r in outside.to_dict("records"))
    text = (f"On the reported items the learning stayed matched ({rule}) for {pairs}; not where {missed}" if pairs
            else f"On the reported items the learning did not stay matched ({rule}) for any pair: {missed}")
    return text + ", so there the forgetting is compared at unequal learning."


def against_smf(table: pd.DataFrame) -> str:
    """Every retention probe on which a selector did worse than a baseline (the verdicts that go against SMF)."""
    worse = table[table["metric"].isin(RETENTION) & (table["verdict"] == "worse")]
    if not len(worse):
        return "No retention probe found a selector worse than a same-start baseline on the reported items."
    parts = []
    for (smf, base), g in worse.groupby(["smf", "baseline"], sort=False):
        said = [f"{WORDS[r['metric']]} ({_cell(r)})" for r in g.to_dict("records")]
        parts.append(f"{NAMES[smf]} was worse than {NAMES[base]} on "
                     + spoken_list(said))
    return "Against SMF: " + "; ".join(parts) + "."


def findings(runs: list[dict], choice: dict | None) -> list[str]:
    """What the study found, in at most four sentences computed from its records and its kept choice of rates: the
    rates and level, whether learning stayed matched on the reported items, what goes against SMF, and the
    paper's view (baselines from the base model) on held-out chat."""
    out = []
    if choice and choice.get("rates"):
        rates = ", ".join(f"{NAMES[a].split(' from')[0]} {r:g}" for a, r in choice["rates"].items()
                          if a in (*SMF, *SAME_START))
        off = [NAMES[a] for a in choice.get("unmatched", [])]
        out.append(f"The rates were chosen on dev items where each method's learning came to {choice['level']:+.3f} "
                   f"nats of gold margin: {rates}" + (f" ({', '.join(off)} outside the {choice['margin']:g}-nat "
                                                      "margin)" if off else f", all within {choice['margin']:g} nats")
                   + ".")
    table = verdict_table(runs, SAME_START)
    if not len(table):
        return out
    out += [s for s in (learning_sentence(table), against_smf(table)) if s]
    paper = verdict_table(runs, PAPER_VIEW, ("chat_loglik",))
    if len(paper):
        out.append("Counted from the base model, as the paper does, " + "; ".join(
            f"{NAMES[r['smf']]} {_kept(r['verdict'])} {NAMES[r['baseline']]} ({_cell(r)})"
            for _, r in paper.iterrows()) + ".")
    return out


def study_state(folder) -> dict:
    """Where the ``cpu`` study in ``folder`` stands, as chapter 3 and the README read it: ``runs`` (its records),
    ``choice`` (the kept choice of rates, or None), ``status`` (one row per planned run), ``finished`` and
    ``planned`` (counts), ``done`` (the rates are chosen and every planned run has finished or diverged) and
    ``answer`` (:func:`answer` once done, else None)."""
    from .frontier import apply_choice, read_choice
    from .plan import study_status
    from .presets import get_preset
    from .results import load_runs

    status = study_status(apply_choice(get_preset("cpu"), folder), folder)
    runs, choice = load_runs(folder), read_choice(folder)
    done = bool(choice and choice.get("rates")) and bool(status["state"].isin(["finished", "failed"]).all())
    return {"runs": runs, "choice": choice, "status": status, "done": done,
            "finished": int((status["state"] == "finished").sum()), "planned": len(status),
            "answer": answer(runs, choice["level"], choice.get("unmatched", ()), choice["margin"]) if done else None}
