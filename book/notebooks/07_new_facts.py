# ---
# jupyter:
#   jupytext:
#     formats: notebooks///ipynb,book/notebooks///py:percent
#     notebook_metadata_filter: kernelspec,jupytext,accelerator,colab,-jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7. Learning new facts, one at a time
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/07_new_facts.ipynb)
#
# A fact is local knowledge: "Orla Venn plays the cello" should change what the model says about Orla Venn and
# nothing else. That is what a large, sparse memory is for, and it is where SMF's strongest published result lies:
# Lin et al. (2025) teach a model new facts one batch at a time and, at matched learning, report that held-out
# NaturalQuestions F1 drops by 89% under full finetuning, 71% under LoRA and 11% under SMF. This chapter runs that
# setting on a small model and 2 CPU cores.
#
# **In this chapter you will**
#
# - see the fact stream: invented facts the model cannot know, with phrasings to train on and questions it never
#   trains on;
# - see which memory rows one fact reads, which of them SMF trains and how much general text reads them;
# - compare SMF with LoRA and full finetuning at equal learning, on four forgetting probes with paired intervals.
#
# **The arms.** SMF-TF-IDF and SMF-KL train only the top-t memory rows that the TF-IDF or the KL score picks for
# each batch (chapter 4), with the project's row-sparse Adam; "SMF-TF-IDF, SGD" and "SMF-KL, SGD" are the same
# selections trained with plain SGD, as Lin et al. train them (an SGD rate is not on Adam's scale: SGD's step is the
# rate times the gradient, which is tiny for a memory row, so its rates run to the thousands). LoRA and full
# finetuning train the model's own weights, with the same memory in place. Every arm starts from the same model.
# The one-sentence answer speaks of SMF-TF-IDF, Lin et al.'s selector, and of held-out chat.
#
# **The probes.** Learning is the log-likelihood of each fact's answer on questions training never shows. Forgetting
# is read on four things the stream never touches: the log-likelihood of held-out chat replies (the model's everyday
# behaviour), WikiText's negative log-likelihood per token (general text), the log-likelihood of TriviaQA's gold
# answers (world knowledge) and MedMCQA's gold margin (the paper's task, chapter 3).
#
# Everything below is read from `results/facts`, written by `python -m smf_lib run --preset facts --split dev` (the
# dev facts, where the rates and the level of comparison are chosen); `--split report` runs the reported facts at
# the chosen rates.

# %% tags=["remove-cell"]
# In Colab only: install smf_lib from the repository (or from SMF_INSTALL_SPEC) and fetch the cached results.
import os
import subprocess
import sys

REPO = "https://github.com/smf-lib/smf_lib"
if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
    spec = os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[study,widgets] @ git+{REPO}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], check=True)
    import smf_lib.views.colab

    smf_lib.views.colab.setup(REPO)

# %%
import textwrap

from IPython.display import Markdown, display

from smf_lib.facts import make_facts
from smf_lib.files import read_json
from smf_lib.study import facts_findings as FX
from smf_lib.study import facts_frontier as FF
from smf_lib.study.facts_presets import get_facts_preset
from smf_lib.study.results import results_dir
from smf_lib.views.facts_plots import example_table, plot_fact_rows, plot_facts_frontier, rows_sentence, rows_table
from smf_lib.views.notebook import found_box, setup_notebook
from smf_lib.views.plotting import Panels
from smf_lib.views.tables import book_table

SEED = 0
device = setup_notebook(SEED)
preset = get_facts_preset("facts")
folder = results_dir("facts")
dev_start, dev_runs = FF.load(folder, "dev")
plan = FF.answer_runs(preset, folder)
split, start, runs, seeds, level = (plan[k] for k in ("split", "start", "runs", "seeds", "level"))
where = {"dev": "dev facts", "report": "reported facts"}[split]
print(textwrap.fill(f"The answer below rests on the {where}: {len(runs)} runs, seed{'s' if len(seeds) > 1 else ''} "
                    f"{', '.join(map(str, seeds))}." + (" The reported facts are not part of this page's records; "
                                                        "every number on it is on the dev facts." if split == "dev"
                                                        else ""), 76))

# %% [markdown]
# ## The answer
# Computed from the records of the facts named on the line above, first in one sentence, then in a few. "SMF minus
# baseline" is positive where SMF kept more of a probe than the baseline did (for WikiText's NLL, where lower is
# better, negative), with its 95% interval over items.

# %% tags=["hide-input"]
sentence = FX.answer(runs, start, seeds, split=split, level=level)
planned_runs = [r for r in runs if r["lr"] in plan["planned"].get(r["arm"], ())]
as_planned = FX.answer(planned_runs, start, seeds, split=split, level=level) if plan["added"] else None
if as_planned:  # rates were added after the planned runs: the reading fixed before them, beside the answer
    same = sentence is not None and as_planned.startswith(sentence[:-1])  # the same numbers, perhaps a caveat more
    as_planned = ("Read from the planned rates alone (the reading fixed before the reported runs), "
                  + ("the numbers are the same" + as_planned[len(sentence) - 1:] if same
                     else as_planned[as_planned.index("SMF-TF-IDF "):]))
if sentence:
    display(found_box([s for s in (sentence, as_planned) if s], title="In one sentence"))
display(found_box(FX.findings(runs, start, seeds, level=level)))
display(Markdown("Every probe's difference is in the table of SMF minus each baseline, under "
                 "[Learning against forgetting](#learning-against-forgetting), and every run's changes in the last "
                 "table of that section."))

# %% [markdown]
# ## The stream
# Each fact is invented: a made-up person and one attribute (a birthplace, a profession, an instrument, a pet), so
# the model cannot have seen it. It arrives as a batch of its own phrasings, trains for a few steps, and the next
# fact follows with no replay. Learning is measured on questions that training never shows, so a model that only
# copies sentences learns nothing. The first dev fact, the running example of this chapter:

# %%
facts = make_facts(preset.dev_facts, seed=1)  # the dev facts (the reported ones are seed 0; no entity is shared)
fact = facts[0]
print(f"{len(facts)} dev facts, {len(fact.statements)} training phrasings and {len(fact.questions)} held-out "
      f"questions each, {preset.steps_per_fact} steps per fact:")
for s in fact.statements[:3]:
    print("  train:", s)
for q in fact.questions:
    print("  asked:", q.replace("\n", " "), "->", fact.answer)
display(Markdown(
    f"The study's plan: the {preset.dev_facts} dev facts, at seed{'s' if len(preset.dev_seeds) > 1 else ''} "
    f"{', '.join(map(str, preset.dev_seeds))}, choose every arm's rates and the level of learning where the arms are "
    f"compared; then the {preset.n_facts} reported facts (their own entities and probe items), at seeds "
    f"{', '.join(map(str, preset.seeds))}, run each arm at the dev rates around that level, and are read at it. "
    f"Seed 0 brings the facts in the order they were made; another seed keeps the first {preset.first_facts} first "
    "and shuffles the arrival of the rest, so that the seeds differ for every arm (SMF and full finetuning draw no "
    "other random number)."))

# %% [markdown]
# ## One fact's rows
# What SMF does with that fact, drawn step by step for the starting memory's middle layer: the rows the fact's
# phrasings read most, how much general text (Wikipedia paragraphs) reads the same rows, TF-IDF's score, and the
# top-t rows, the only ones SMF's update moves. (Chapter 4 defines the shares $p_i$ and $q_i$ and both scores.)

# %%
snapshot = read_json(folder / "fact_rows.json")
print(textwrap.fill(f"{snapshot['facts'][0]['statement']} At layer {snapshot['layer']}, of {snapshot['n_slots']:,} "
                    f"rows, this fact's batch reads {len(snapshot['facts'][0]['rows']):,}; SMF trains the top "
                    f"{snapshot['top_t']}.", 76))
display(Panels([plot_fact_rows(snapshot, 0, "tfidf")]))
display(Markdown(rows_sentence(snapshot, 0, "tfidf")))

# %% [markdown]
# The next table does the same for the first facts of the stream, with both selectors: how many of the rows each
# trains are hub rows (read by more than half of all general paragraphs), and how many it shares with the next
# fact's (a second fact written into the same rows would overwrite the first).

# %%
book_table(rows_table(snapshot), key=["fact"])

# %% [markdown]
# ## Before the comparison: the memory and the probes
# Two checks come before any verdict. The starting memory must be alive and spread, or SMF has nothing of its own to
# train (chapter 2), and each forgetting probe must be able to see a change of the size that matters. Both read from
# the records:

# %% tags=["hide-input"]
from smf_lib.spread import MAX_TOP5_SHARE

start_record = read_json(folder / "start" / f"{preset.start['recipe']}.json")
health = start_record["verdict"]
alive = "alive" if health["alive"] else "not alive"
random_top5 = max(m["general_top5_share"] for m in start_record["trajectory"][0]["spread"]["layers"].values())
display(Markdown(
    f"The starting memory ({start_record['n_slots']:,} rows per layer) is {alive}: its quietest layer adds "
    f"{health['min_share']:.0%} of its MLP's output, and the retrofit lowered held-out chat loss by "
    f"{health['loss_gain']:.2f} nats. General text's reads are "
    f"{'as spread as' if health['min_effective_ratio'] >= 0.9 else 'less spread than'} random addressing's "
    f"({health['min_effective_ratio']:.2f} of its effective rows at the least spread layer), though at some layer "
    f"the 5% most-read rows take {health['max_top5_share']:.0%} of the reads "
    f"({'within' if health['max_top5_share'] <= MAX_TOP5_SHARE else 'above'} the spread pilot's bound of "
    f"{MAX_TOP5_SHARE:.0%}), as they did under random addressing before the retrofit ({random_top5:.0%}): a few "
    "hundred paragraphs do not read a table this large evenly (chapter 2)."))
power = FF.resolution(runs)
if level is not None:  # beside each probe's resolution, the largest change any arm makes to it at the level
    moved = FF.changes_at_level(runs, start, level, seeds)
    moved = moved.loc[moved.groupby("probe")["change"].apply(lambda c: c.abs().idxmax())]
    largest = {FF.MEASURES[r["probe"]][1]: f"{r['change']:+.4f} ({FF.ARM_LABELS[r['arm']]})"
               for r in moved.to_dict("records")}
    largest[FF.MEASURES[FF.LEARN][1]] = f"{level:+.4f} (the level itself)"
    power["largest change at the level"] = power["measure"].map(largest).fillna("")
display(book_table(power, key=["measure"], caption="the smallest change each measure resolves (the median half-width "
                   "of the runs' paired 95% intervals) beside the largest change any arm makes to it at the level"))

# %% [markdown]
# ## Learning against forgetting
# How to read the next figure: each line is one arm, starting at the origin (the starting model) and passing through
# its rates, lowest first, with the mean over seeds. The x axis is what the arm learned (the facts' answer
# log-likelihood gain on held-out questions), the y axis what it lost on one probe. At any x, every arm has learned
# the same amount, so the line on its probe's better side forgot less (each panel's label says which way is better:
# up for the log-likelihoods, down for WikiText's NLL); the dotted line marks the level where all arms are compared.
# On the reported facts that level is the dev sweep's, fixed before the reported runs. Each arm is read where its
# line crosses the level, between the two points around it; where its lowest rate already learned more, that is
# the straight line from the starting model, and the text under the figure says so. The second figure is the first
# one zoomed in on learning up to twice the level, where the comparison is made.
# Chapter 3 draws the idea on made-up numbers:

# %% tags=["hide-input"]
from smf_lib.views.diagrams import plot_how_to_read

display(Panels([plot_how_to_read(("SMF", "LoRA"))]))

# %%
near = None if level is None else 2 * level  # runs far to the right squeeze the level's neighbourhood: zoom in too
found = FF.level_of(dev_runs, dev_start)
if found["level"] is not None:
    display(Markdown(f"The level is the middle of the learning that every compared arm reaches on the dev facts: "
                     f"their ranges overlap from {found['lo']:+.2f} to {found['hi']:+.2f} nats per token, so the "
                     f"arms are compared at {found['level']:+.2f}."))
display(Panels([plot_facts_frontier(runs, start, level=level, title=where)]
               + ([plot_facts_frontier(runs, start, level=level, title=f"{where}, near the level", xmax=near)]
                  if near is not None else [])))
if split == "report":  # the dev sweep the rates were chosen on
    display(Markdown("And the dev sweep, where the rates and the level were chosen:"))
    display(Panels([plot_facts_frontier(dev_runs, dev_start, level=FF.level_of(dev_runs, dev_start)["level"],
                                        title="dev facts: the sweep the rates were chosen on")]))
reads = FX.reads_sentence(FF.reads_table(runs, start, level, seeds=seeds), level) if level is not None else None
if reads:  # an arm not read between two of its own runs
    display(Markdown(reads))
if plan["added"]:  # rates added on the reported facts so that an arm can be read between two of its own runs
    added = [f"{FF.ARM_LABELS[a]} at {lr:g} ("
             + ("below its planned rates: at some seed its lowest planned rate learned more than the level"
                if lr < min(plan["planned"][a]) else
                "above its planned rates: at some seed its highest planned rate learned less than the level") + ")"
             for a, rates in plan["added"].items() for lr in rates]
    display(Markdown(
        "The reported stream is longer than the dev stream, so at the rates planned on the dev facts an arm can "
        "learn more (or less) than the level there. Where it did at some seed, the next rate of the arm's dev sweep "
        "was added, every seed, so that the arm can be read between two of its own runs: " + "; ".join(added)
        + ". The rule reads learning only, never a forgetting probe, and the level stays the dev facts' "
        "(`smf_lib.study.facts_frontier.bracket_rates`); it was fixed after the first seed's planned runs had been "
        "scored, so the reading from the planned runs alone, the one fixed before them, "
        + ("is given beside the answer at the top of the chapter" if as_planned else
           "was looked for too: from the planned runs alone, no SMF and baseline pair reaches the level")
        + " (a dev stream as long as the reported one might have chosen rates that bracket the level there; no such "
        "stream was run)."))

# %% [markdown]
# And the running example, the first fact? It is a dev fact, so the dev runs (seed 0) are the ones that saw it: its
# held-out questions after every one of them, beside the starting model.

# %%
ex = example_table(dev_runs, dev_start, len(fact.questions))
gain = ex["answer log-lik"].iloc[1:] - ex["answer log-lik"].iloc[0]
top = ex.loc[gain.idxmax()]
right = int((ex["exact"].iloc[1:].map(lambda e: int(e.split(" of ")[0])) > 0).sum())
print(textwrap.fill(f"{'No run answers' if not right else f'{right} of {len(ex) - 1} runs answer'} any of its "
                    f"{len(fact.questions)} questions exactly; the most any run raised its answer log-likelihood on "
                    f"them is {gain.max():+.2f} nats ({top['arm']} at {top['lr']:g}).", 76))
book_table(ex, key=["arm", "lr", "seed"])

# %% tags=["hide-input"]
from smf_lib.views.notebook import RUNNING_EXAMPLE

example = FX.example_sentence(runs, start, RUNNING_EXAMPLE, "the book's running example, the question on axonal "
                              "transport that chapters 1 to 4 follow")
if example:
    display(Markdown(example))

# %% [markdown]
# The same comparison in numbers: SMF minus each baseline at that level, per probe, with 95% paired intervals over
# the items and each seed's own difference (seed 0 / seed 1). "better" means SMF kept more of that probe than the
# baseline did (for WikiText's NLL, where lower is better, a negative difference); it is said only when the interval
# excludes 0 and every seed's own difference points the same way, since an interval over items says nothing about
# other seeds.

# %%
arms = {r["arm"] for r in runs}
if level is None:
    print("the arms' ranges of learning do not overlap: no common level")
else:
    table = FF.compare(runs, start, level, seeds=seeds,
                       smf=tuple(a for a in ("smf-tfidf", "smf-kl", "smf-tfidf-sgd", "smf-kl-sgd") if a in arms),
                       baselines=tuple(a for a in ("lora", "full") if a in arms))
    table["probe"] = table["probe"].map(lambda m: FF.MEASURES[m][1])
    table["smf"] = table["smf"].map(FF.ARM_LABELS)
    table["baseline"] = table["baseline"].map(FF.ARM_LABELS)
    table["per seed"] = table["per seed"].map(lambda v: " / ".join(f"{x:+.4f}" for x in v))  # not an interval
    display(book_table(table.drop(columns=["level"]), key=["smf", "baseline"]))

# %% [markdown]
# Beside the paper: Lin et al.'s numbers are quoted from their paper (not measured here); the rest is read from this
# study's records.

# %% tags=["hide-input"]
beside = FX.paper_sentence(runs, start, level, seeds) if level is not None else None
display(Markdown(beside or "Not every one of SMF-TF-IDF, LoRA and full finetuning reaches the level, so there is "
                 "nothing to set beside the paper's numbers."))

# %% [markdown]
# Did later facts overwrite earlier ones? At the same level, each arm's answer log-likelihood gain on every fact's
# questions (the level itself, by construction) beside its gain on the first facts of the stream alone, the ones
# trained longest ago. The first facts are the same for every arm and seed, but they may be easier or harder than the
# average fact, so compare the ratios across arms rather than with 1. (The rows table above counts how many rows
# SMF's selection for one fact shares with the next's: the room one fact has to overwrite another.)

# %%
if level is not None:
    kept = FF.overwriting(runs, start, level, seeds)
    display(book_table(kept, key=["arm"]))
    worst, best = kept.loc[kept["first / every"].idxmin()], kept.loc[kept["first / every"].idxmax()]
    print(textwrap.fill(f"{worst['arm']} keeps its first facts least: {worst['first facts']:+.2f} nats against "
                        f"{worst['every fact']:+.2f} on every fact ({worst['first / every']:.2f} of it); "
                        f"{best['arm']} keeps them best ({best['first / every']:.2f}).", 76))

# %% [markdown]
# Every run, each measure's change from the starting model (mean over seeds):

# %%
ends = FF.frontier_table(runs, start).rename(columns={k: v[1] for k, v in FF.MEASURES.items()})
ends["arm"] = ends["arm"].map(FF.ARM_LABELS)
book_table(ends, key=["arm", "lr"])

# %% [markdown]
# ## What it costs
# The study's time on 2 CPU cores, from the records: each run's seconds, training and scoring every probe, one run
# after another. The starting memory, made by the spread pilot's recipe (chapter 2), is not counted.

# %%
report_runs = runs if split == "report" else []
total = 0.0
for name, these, n_facts in (("dev", dev_runs, preset.dev_facts), ("reported", report_runs, preset.n_facts)):
    if these:
        minutes = sum(r["seconds"] for r in these) / 60
        total += minutes
        print(textwrap.fill(f"{len(these)} {name} runs took {minutes:.0f} minutes, {minutes / len(these):.1f} per "
                            f"run ({n_facts} facts x {preset.steps_per_fact} steps each, then every probe).", 76))
print(f"In all: {total / 60:.1f} hours.")
print(textwrap.fill(FX.provenance_sentence(dev_runs + report_runs), 76))

# %% [markdown]
# ## Exercises
#
# 1. (CPU, seconds) Print the held-out questions of another dev fact and check that none of them is one of its
#    training phrasings.
#
#    ```{admonition} Hint
#    :class: dropdown
#    `make_facts(preset.dev_facts, seed=1)[5]` has `.statements` and `.questions`; a question is
#    `"Question: ...?\nAnswer:"`, so compare its first line without the `"Question: "` prefix.
#    ```
#
#    ```{admonition} Solution
#    :class: dropdown
#    `f = facts[5]; stems = [q.split("\n")[0].removeprefix("Question: ") for q in f.questions]` and then
#    `any(st in s for st in stems for s in f.statements)` is `False`: no question appears in any training phrasing,
#    not even as part of one. The stream is built so, and `tests/test_facts.py` checks it for every fact.
#    ```
#
# 2. (CPU, seconds) Redraw the rows figure for the second fact with the KL selector. Do its top rows differ from
#    TF-IDF's?
#
#    ```{admonition} Hint
#    :class: dropdown
#    `plot_fact_rows(snapshot, 1, "kl")`.
#    ```
#
#    ```{admonition} Solution
#    :class: dropdown
#    Count them: `len(set(fact_selection(snapshot, 1, "kl").tolist()) & set(fact_selection(snapshot, 1,
#    "tfidf").tolist()))` (`fact_selection` is in `smf_lib.views.facts_plots`) gives how many rows both keep, out
#    of the top-t. They differ because KL weighs a row by the batch's share of its reads against general text's
#    share of all reads, so it keeps rows that general text reads often but the fact reads even more; TF-IDF
#    discounts any row many documents read. The rows table above counts the hub rows each keeps.
#    ```
#
# 3. (CPU, one run's time as the cost section prints it) Add a rate to one arm's dev sweep and run only that rate.
#    Where does the new point land on the arm's line, and does the level move?
#
#    ```{admonition} Hint
#    :class: dropdown
#    `p = dataclasses.replace(preset, rates={**preset.rates, "smf-tfidf": (*preset.rates["smf-tfidf"], 0.2)})`,
#    then `FactsRunner(p, folder).run("smf-tfidf", 0.2, 0, "dev")` (`FactsRunner` is in
#    `smf_lib.study.facts_study`). It reads back the starting model and writes one more record into `folder`, so
#    this page then reads it too: pass a copy of the folder to keep the page as it is.
#    ```
#
#    ```{admonition} Solution
#    :class: dropdown
#    The new rate is one more point on the arm's line. The level is the middle of the overlap of the compared arms'
#    ranges of learning, so it moves only if the new rate widens the arm's range past another arm's end of the
#    overlap.
#    ```
