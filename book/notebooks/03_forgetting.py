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
# # 3. Forgetting probes
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/03_forgetting.ipynb)
#
# **In this chapter you will**
#
# - learn what each probe measures, and why every probe keeps a result per item;
# - read each method's change against the base model with a paired 95% interval, in one compact table;
# - place every method on a plane of learning against forgetting;
# - test the MedMCQA changes question by question with McNemar's exact test;
# - state what the intervals support, and what they do not.
#
# Every model is evaluated with the same protocols (section 6 of the {doc}`method <../method>`):
#
# - **MedMCQA** (what we teach; [Pal et al. 2022](https://arxiv.org/abs/2203.14371)): the option with the highest
#   mean per-token log-likelihood after the prompt is the answer (chapter 1). The gold option's log-likelihood
#   is kept too; it moves before accuracy does.
# - **WikiText perplexity** (general language; [Merity et al. 2016](https://arxiv.org/abs/1609.07843)): sliding
#   windows of 1,024 tokens with a stride of 512, each token scored once.
# - **TriviaQA** (world knowledge; [Joshi et al. 2017](https://arxiv.org/abs/1705.03551)): at most 32 greedy
#   tokens, correct when a normalised answer alias is contained in the output. A 135M model answers only a few
#   percent of the questions, so a **retention score** is reported too: the mean log-likelihood of the first
#   gold alias after the question.
# - Where the study has them: **{term}`drift`** on held-out WikiText and chat replies, **{term}`chat retention`**
#   and **{term}`acquisition`**. An instruct model trained on plain text can get better at plain text while its
#   chat behaviour drifts; these probes see that.
#
# Each probe keeps per-item results, so every change against the base model is **paired**
# ({term}`paired interval`): for a metric $m$ the change is $\Delta = m(\text{tuned}) - m(\text{base})$ on the same
# items, and its 95% interval comes from resampling the items 2,000 times, with replacement, for both models at
# once and taking the 2.5th and 97.5th percentiles of the resampled $\Delta$. Item difficulty cancels out.

# %% tags=["remove-cell"]
# In Colab only: install smf_lib from the repository (or from SMF_INSTALL_SPEC) and fetch the cached results.
import os
import subprocess
import sys

REPO = "https://github.com/smf-lib/smf_lib"
if "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ:
    spec = os.environ.get("SMF_INSTALL_SPEC", f"smf_lib[widgets] @ git+{REPO}")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], check=True)
    import smf_lib.views.colab

    smf_lib.views.colab.setup(REPO)

# %%
import textwrap

import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from smf_lib import setup_notebook
from smf_lib.study.arms import ORDER
from smf_lib.study.paired_stats import mcnemar
from smf_lib.views.plotting import Panels, plot_deltas, plot_frontier, plot_paths, plot_tradeoff
from smf_lib.study.presets import get_preset
from smf_lib.study.results import (claims_table, delta_table, frontier_table, load_results, seed_spread,
                             verdicts)
from smf_lib.study.runner import status_line, study_status
from smf_lib.views.tables import book_table

SEED = 0
device = setup_notebook(SEED)
pd.set_option("display.max_colwidth", None)  # lists of metrics in full
folder, summary, runs = load_results("cpu-v1")
print(status_line(study_status(get_preset("cpu-v1"), folder), width=76))
summary = summary[summary["method"].isin(ORDER)]  # the grid's methods
# the grid's fully evaluated runs (the swept rates are scored on the dev subset only: see the frontier below)
runs = [r for r in runs if r["method"] in ORDER and r.get("evaluation", "full") == "full"]
runs.sort(key=lambda r: (ORDER.index(r["method"]), str(r["seed"])))
base = next(r for r in runs if r["method"] == "base")
probe_items = {"MedMCQA questions": "medmcqa_correct",
               "trained questions (acquisition)": "acquisition_correct",
               "TriviaQA questions": "triviaqa_correct",
               "WikiText windows": "wikitext_window_nll",
               "chat replies": "chat_loglik"}
print(textwrap.fill("reported items: " + ", ".join(
    f"{len(base['items'][k]):,} {name}" for name, k in probe_items.items()
    if k in base["items"]), 76))

# %% [markdown]
# ## Choosing the regime on dev items: the pilot
# A study of forgetting needs a regime in which forgetting can be seen. Whether 75 steps on 2 CPU cores reach
# one, and at
# which learning rate, was settled before the study by a pilot, `python -m smf_lib run --preset cpu-pilot`
# (files in `results/cpu-pilot/`): full finetuning on the study's 1,200 training texts at three planned learning
# rates (the run at $10^{-3}$ has not been finished; the choice below rests on the other two), every probe scored
# on **dev items only** (400 MedMCQA validation questions, 100 TriviaQA questions, 80 WikiText lines and 100 chat
# replies, none of them among the reported items of the rest of this chapter). Nothing in the study was chosen on
# its reported items.
#
# A drift KL is positive as soon as the model changes at all, so it measures *how far* the model moved, not whether
# it got worse. Forgetting shows on the retention probes: chat log-likelihood (down is worse), WikiText perplexity
# (up is worse) and TriviaQA (down is worse).

# %%
pilot_folder, pilot, _ = load_results("cpu-pilot")
print(status_line(study_status(get_preset("cpu-pilot"), pilot_folder), width=76))
retention = ("chat_loglik", "wikitext_ppl", "triviaqa_alias_loglik",
             "triviaqa_acc")
book_table(delta_table(pilot, ("medmcqa_gold_loglik", "medmcqa_acc", *retention, "chat_drift_kl"))
           .drop(columns="seed"), key=["method", "lr"])

# %% [markdown]
# Per pilot run, the retention probes whose paired 95% interval lies entirely on the worse side:

# %%
pilot_verdicts = verdicts(pilot).set_index(["method", "lr"])
worse = {lr: [m.replace("_", " ") for m in retention
              if pilot_verdicts.loc[("full", lr)].get(m) == "worse"]
         for lr in pilot_verdicts.loc["full"].index}
for lr, metrics in worse.items():
    print(f"full finetuning at lr {lr}: "
          + (f"worse on {', '.join(metrics)}" if metrics else "no retention probe worse"))

# %% [markdown]
# At the paper's rate, $5 \times 10^{-5}$, 75 steps of full finetuning learned the task's answer format (the gold
# option's log-likelihood rose clearly) and moved every retention probe the better way or not at all; the likely
# reason is that exam questions with explanations are plain text and short answers too. Nothing these probes can see
# was forgotten. At $2 \times 10^{-4}$ it learned as much, and chat log-likelihood fell, with an interval entirely
# below zero. The study therefore trains full finetuning at $2 \times 10^{-4}$, the smallest pilot rate at which it
# forgets measurably, and sweeps $5 \times 10^{-5}$ and $10^{-3}$ around it; the other methods keep the paper's
# rates and are swept too, so the frontier compares them at matched learning. SMF-KL's sweep goes up to 100 times
# the paper's rate: at the paper's rate, 75 steps barely moved its dev trajectory (next sections), because Adam
# moves each value coordinate by about the rate per step, and 75 steps are a tiny fraction of the paper's thousands.
# The epochs (one) and the data sizes are the same as in the pilot. The forgetting that this regime produces is
# small, and only the chat probe sees it at $2 \times 10^{-4}$: this is the regime the study can afford, not a
# strong test.

# %% [markdown]
# ## What each method scores
# The probes' values per run. Accuracies are in percent. The MedMCQA majority baseline (always answering the
# most common gold letter of these items) sits next to the accuracy, because a small model can beat chance by
# preferring one letter; "trained" is the accuracy on trained questions, when the study measures it.

# %%
names = {"medmcqa_acc": "MedMCQA (%)", "medmcqa_majority_acc": "majority (%)",
         "acquisition_acc": "trained (%)", "wikitext_ppl": "WikiText ppl",
         "chat_loglik": "chat log-lik", "triviaqa_acc": "TriviaQA (%)",
         "triviaqa_alias_loglik": "TriviaQA log-lik"}
present = [m for m in names if m in summary]
accuracies = [m for m in present if m.endswith("_acc")]
table = summary.set_index(["method", "seed"])[present]
table[accuracies] = 100 * table[accuracies]
book_table(table.round(2).round({m: 1 for m in accuracies}).rename(columns=names), key=["method", "seed"])

# %% [markdown]
# ## Changes against the base model
# One cell per run and metric: the change $\Delta$ and its paired 95% interval $[\text{lo}, \text{hi}]$, rounded
# to what the interval's width supports ({py:func}`~smf_lib.study.results.delta_table`), in three groups: what was
# learned, general text, and chat and world knowledge. Accuracies are in points; a group the study has no
# metric for is left out.

# %%
groups = {"learning": ("medmcqa_acc", "medmcqa_gold_loglik",
                       "acquisition_acc"),
          "general text": ("wikitext_ppl", "wikitext_drift_kl"),
          "chat and world knowledge": ("chat_drift_kl", "chat_loglik",
                                       "triviaqa_alias_loglik")}
for name, metrics in groups.items():
    table = delta_table(summary, metrics)
    if len(table.columns) > 3:
        display(Markdown(f"**{name}**"), book_table(table, key=["method", "lr", "seed"]))

# %%
Panels(plot_deltas(summary, [m for metrics in groups.values() for m in metrics], split=True))

# %% [markdown]
# ## Seeds against items
# The intervals above resample the evaluation items of one trained model. A second training seed (another order
# of the same training texts; for LoRA also another initialisation and dropout) says how much the result depends on
# the training run itself, which item resampling cannot see. For each method trained with several seeds: the mean
# change over its seeds, the lowest and highest seed, and the half-width of one seed's item interval beside them.

# %%
spread_metrics = ("d_medmcqa_acc", "d_chat_loglik", "d_wikitext_ppl")
spread = seed_spread(summary, spread_metrics)
spread = spread[spread["seeds"] > 1]
if len(spread):
    cells = []
    for _, r in spread.iterrows():
        first = summary[(summary["method"] == r["method"])
                        & (summary["lr"] == r["lr"])].iloc[0]
        row = {"method": r["method"], "seeds": r["seeds"]}
        for m in spread_metrics:
            s = 100 if m.endswith("_acc") else 1
            half = (first[f"{m}_hi"] - first[f"{m}_lo"]) / 2 * s
            row[m[2:].replace("_", " ")] = (
                f"{r[f'{m}_mean'] * s:+.2g} (seeds {r[f'{m}_min'] * s:+.2g} to "
                f"{r[f'{m}_max'] * s:+.2g}; items ±{half:.2g})")
        cells.append(row)
    display(book_table(pd.DataFrame(cells), key=["method"]))
else:
    print("no method of this study has finished a second seed yet")

# %% [markdown]
# Where the seeds' range is wider than one seed's item interval, the training run itself varies more than the item
# resampling can show, and a single seed's interval understates the uncertainty; where it is narrower, the items
# are the larger source of noise and more evaluation items, not more seeds, would sharpen the result.

# %% [markdown]
# ## Learning against forgetting
# Each method's MedMCQA change (x) against its change on a forgetting probe (y), with both intervals. The axis
# labels say which way is better: further right learned more; on the forgetting axis, the better direction depends
# on the probe (perplexity and drift should go down, log-likelihoods up).

# %%
candidates = ("chat_drift_kl", "wikitext_ppl", "triviaqa_alias_loglik")
forgetting = [m for m in candidates if f"d_{m}" in summary][:2]
panels = []
for k, m in enumerate(forgetting):
    ax = plot_tradeoff(summary, m, ax=plt.subplots(figsize=(4.6, 3.9))[1])
    if k:
        ax.get_legend().remove()
    ax.figure.tight_layout()
    panels.append(ax)
Panels(panels)

# %% [markdown]
# Every trained run also scored the cheap dev subset along training (`trajectories.csv`: 150 MedMCQA dev
# questions, 40 dev chat replies, at 4 points from step 0 to the end). The next cell draws each method's path from
# its start to its end, with the gain in the gold option's log-likelihood on x and the drift on chat replies on y,
# and the end point of every learning rate tried: at matched learning, the lower curve moved the model less
# ({py:func}`~smf_lib.views.plotting.plot_paths`, {py:func}`~smf_lib.views.plotting.plot_frontier`). The drifts span
# several orders of magnitude, so the y axes are logarithmic (linear near zero, where every path starts).

# %%
trajectories = pd.read_csv(folder / "trajectories.csv")
if len(trajectories):
    panels = [plot_paths(trajectories, ax=plt.subplots(figsize=(4.6, 3.9))[1]),
              plot_frontier(trajectories, ax=plt.subplots(figsize=(4.6, 3.9))[1])]
    for ax in panels:
        ax.figure.tight_layout()
    display(Panels(panels))
else:
    print("no trained run of this study has finished yet")

# %% [markdown]
# The same end points as numbers ({py:func}`~smf_lib.study.results.frontier_table`): the mean over seeds with its paired
# 95% interval (for two seeds, from the lower of their bounds to the higher), and, for each point, the other
# methods' points that *dominate* it, having learned at least as much while drifting no more. These are point
# estimates on the cheap dev subset, so a domination between points whose intervals overlap is a tendency, not a
# result.

# %%
book_table(frontier_table(trajectories, cells=True), key=["method", "lr"])

# %% [markdown]
# ## Paired tests on MedMCQA
# McNemar's test looks only at the questions on which the two models disagree: $b$ questions the tuned model
# newly gets right and $c$ it newly gets wrong. If training changed nothing, each such question would go either
# way with probability 1/2, so the exact two-sided p-value comes from a binomial distribution with $b + c$ trials
# ({py:func}`~smf_lib.study.paired_stats.mcnemar`).

# %%
correct = base["items"]["medmcqa_correct"]
tests = [{"method": r["method"], "seed": r["seed"],
          **mcnemar(correct, r["items"]["medmcqa_correct"])}
         for r in runs if r["method"] != "base"]
labels = {"gained": "newly right (b)", "lost": "newly wrong (c)"}
book_table(pd.DataFrame(tests).rename(columns=labels).round(2), key=["method", "seed"])

# %% [markdown]
# ## What the intervals support
# For each run, the metrics whose paired 95% interval lies entirely on the better side and those whose interval
# lies entirely on the worse side ({py:func}`~smf_lib.study.results.verdicts`); on every other metric the interval
# crosses zero.
# It is computed from the results; none of it is typed in by hand. The drift KLs are left out: they rise with any
# change at all, so they say how far a model moved, not whether it got worse.

# %%
long = verdicts(summary).melt(["method", "lr", "seed"], var_name="metric").dropna()
long = long[~long["metric"].str.endswith("drift_kl")]
long["metric"] = long["metric"].str.replace("_", " ")
grouped = long.groupby(["method", "lr", "seed", "value"], sort=False)["metric"]
table = grouped.agg(", ".join).unstack("value", fill_value="")
table = table.reindex(columns=["better", "worse"], fill_value="")  # every other probe: no clear change
table = table.sort_index(level="method", key=lambda i: i.map(ORDER.index)).rename_axis(columns=None)
book_table(table, key=["method", "lr", "seed"])

# %% [markdown]
# The pilot chose full finetuning's rate because, on dev items, a retention probe got worse at it. Whether the same
# happens on the reported items is a result of the study, not a given; the next cell compares the two, per seed.

# %%
rate = get_preset("cpu-v1").lr["full"]
study_verdicts = verdicts(summary)
lrs = pd.to_numeric(study_verdicts["lr"], errors="coerce")
at_rate = study_verdicts[(study_verdicts["method"] == "full") & (lrs == rate)]
on_dev = worse.get(next((lr for lr in worse if float(lr) == rate), None), [])
print(f"pilot, dev items, full finetuning at {rate:g}: "
      + (f"worse on {', '.join(on_dev)}" if on_dev else "no retention probe worse"))
for _, row in at_rate.iterrows():
    hit = [m.replace("_", " ") for m in retention if row.get(m) == "worse"]
    print(f"study, reported items, seed {row['seed']}: "
          + (f"worse on {', '.join(hit)}" if hit else "no retention probe worse"))
if at_rate.empty:
    print("full finetuning at this rate has not finished yet in the study")

# %% [markdown]
# ## The paper's claims, checked on this study
# The paper's abstract claims that SMF gains about 2.5 points on MedMCQA while keeping WikiText perplexity and
# TriviaQA accuracy within about a point of the base model, and that LoRA and full finetuning gain more and drift
# clearly (section 7 of the {doc}`method <../method>`). Each row tests one of these claims for one method, once
# per training seed (the runs of that seed compared with each other and with base): what was measured, with its
# paired 95% interval, and whether the interval agrees with the claim, contradicts it, or cannot tell
# ({py:func}`~smf_lib.study.results.claims_table`). For the size of SMF's gain, an interval entirely below half of the
# claimed 2.5 points counts as a disagreement. The model, the data sizes and the run lengths are far from the
# paper's, so a disagreement here is about this setting, not a refutation.

# %%
seeds = sorted({r["seed"] for r in runs if r["method"] != "base"})
per_seed = {s: claims_table(runs, seed=s).set_index(["claim", "compared"]) for s in seeds}
claims = pd.concat({f"seed {s}": t for s, t in per_seed.items()}, axis=1)
claims.columns = [f"{a}: {b}" for a, b in claims.columns]
book_table(claims, key=["claim", "compared"])

# %% [markdown]
# **Reading these numbers.** A 135M model near chance on MedMCQA, few seeds, and a few hundred to a thousand
# evaluation items: a MedMCQA change whose interval crosses zero is not a gain. The log-likelihood scores are far
# more sensitive than accuracies, so changes show there first. The paper's claim (SMF learns a little while
# staying within about a point on the probes, and LoRA and full finetuning learn more and drift more) can only be
# checked in its direction here. If training on MedMCQA *lowers* WikiText perplexity, the likely reason is that
# an instruct model trained on plain text becomes a better plain-text predictor in general; the drift and chat
# probes measure the change in the model's distributions whatever its direction. Chapter 5 explains how to run
# the paper's setting.
#
# :::{admonition} What this chapter shows, and what it does not
# :class: note
# **It shows**, for every run of the study, the change on each probe against the base model on the same items, with
# a paired 95% interval; the spread across training seeds; the paths along training and the frontier across
# learning rates; and what the intervals support, claim by claim, computed from the result files.
#
# **It does not show** the paper's setting. A 135M model trained on 1,200 questions for one epoch is far from
# Qwen2.5-0.5B on 60,000, so the verdicts are about this setting. An interval that crosses zero does not show that
# nothing changed, only that any change is too small for these item counts to resolve. One rate per method is one
# point on its trade-off; the frontier compares methods at matched learning.
# :::
#
# ## Summary
# - Every probe keeps per-item results, so every change against base is paired, with a bootstrap 95% interval.
# - {py:func}`~smf_lib.study.results.delta_table` gives one compact cell per run and metric; the verdicts table says
#   which intervals exclude zero, and on which side.
# - MedMCQA accuracy moves little at this scale; the log-likelihood scores, perplexity and drift are the
#   sensitive probes.
# - The frontier is the only comparison at matched learning. The sweeps barely overlap in learning: SMF-KL's
#   highest rate learned less than the baselines' lowest, and in the frontier table LoRA at its lowest rate learned
#   more than SMF-KL at its highest for about the same drift. Whether SMF forgets less than LoRA at equal learning
#   is therefore not shown by this study; it would need longer SMF runs or higher SMF rates.
#
# ## Exercises
# 1. (CPU, about 1 minute) Recompute one interval with {py:func}`~smf_lib.study.paired_stats.paired_bootstrap`:
#    `smf-kl` against base on `medmcqa_acc` with `n_boot=10_000` and two other `seed`s. How much do the bounds move?
#
#    :::{dropdown} Hint
#    Take the run from this chapter's `runs` and the base items from `base`. The function returns fractions; the
#    tables show points.
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    from smf_lib.study.paired_stats import paired_bootstrap
#
#    smf = next(r for r in runs if r["method"] == "smf-kl" and r["seed"] == 0)
#    for s in (0, 1, 2):
#        ci = paired_bootstrap(base["items"], smf["items"], "medmcqa_acc", n_boot=10_000, seed=s)
#        print(s, {k: round(100 * ci[k], 2) for k in ("delta", "lo", "hi")}, f"p_le_0 {ci['p_le_0']:.3f}")
#    ```
#
#    The change does not move at all: it is computed once, on all items. The bounds move little or not at all: an
#    accuracy over 1,000 questions changes in steps of one question (0.1 points), and 2,000 resamples already put
#    the 2.5th and 97.5th percentiles on the same step or the next one. Only `p_le_0`, the share of resampled
#    changes at or below zero, moves a little. Rounded as the tables round them, the cells do not change: the
#    interval's width comes from the items, not from the number of resamples.
#    :::
#
# 2. (CPU, about 1 minute) Compare `smf-kl` with `lora` directly, with {py:func}`~smf_lib.study.paired_stats.mcnemar`
#    on their `medmcqa_correct` items. Is either better on MedMCQA at this sample size?
#
#    :::{dropdown} Hint
#    `mcnemar(a, b)` counts the questions that `b` newly gets right against `a` (`gained`) and newly gets wrong
#    (`lost`). Pair the two methods' runs of the same seed.
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    for s in (0, 1):
#        smf = next(r for r in runs if r["method"] == "smf-kl" and r["seed"] == s)
#        lora = next(r for r in runs if r["method"] == "lora" and r["seed"] == s)
#        print(f"seed {s}:", mcnemar(smf["items"]["medmcqa_correct"], lora["items"]["medmcqa_correct"]))
#    ```
#
#    Neither. At both seeds the two models disagree on many questions but split them nearly evenly, LoRA losing a
#    few more than it gains, and `p` stays above 0.05. That matches the changes table, where LoRA's accuracy
#    interval crosses zero. MedMCQA accuracy cannot rank the two at this size; the gold option's log-likelihood,
#    which LoRA moved far more than SMF, is the sensitive score.
#    :::
#
# 3. (reading only) The `smf-kl` and `smf-tfidf` runs differ only in their selector. In chapter 4's top-t explorer,
#    compare the rows the two select at the study's top-t of 128 on each memory layer: do they differ enough for
#    the two runs to differ on the probes above?
#
#    :::{dropdown} Hint
#    Chapter 4's first overlap figure gives the Jaccard overlap of the two selections at t = 128 directly. Then
#    compare the `smf-kl` and `smf-tfidf` rows of this chapter's tables, the log-likelihood and drift columns too.
#    :::
#
#    :::{dropdown} Solution
#    The selections differ a lot: at t = 128 their Jaccard overlap is well below 1 at every layer, and KL takes far
#    more hub rows. The runs differ far less. Both barely moved the model: the retrofit left the memory carrying a
#    tiny share of the MLP's output, so whichever rows were written, little came out of them. The difference shows
#    only in the scores with narrow intervals, the gold option's log-likelihood and the drift KLs, where the KL run
#    moved a little more at both seeds; on accuracy the two cannot be told apart. Different rows are needed for the
#    selector to matter, but they are not enough: the memory must also carry signal.
#    :::
#
# 4. (reading only) Before reading the "Seeds against items" table, predict for LoRA and full finetuning: will
#    their two training seeds differ by more or by less than one seed's item interval? Check against the table.
#
#    :::{dropdown} Hint
#    A second seed changes only the order of the same training texts (and LoRA's initialisation and dropout). The
#    item interval says how much the result could change with another draw of as many evaluation items.
#    :::
#
#    :::{dropdown} Solution
#    By less. For LoRA and full finetuning, the range from the lower seed to the higher one is, in every cell,
#    smaller than the item half-width (±) printed beside it, on all three metrics. Here the evaluation items are the
#    larger source of noise, so more items, not more seeds, would sharpen these results. For the SMF runs the two
#    are closer in size, because SMF barely changed the model and its item intervals are very narrow.
#    :::
