# ---
# jupyter:
#   jupytext:
#     formats: notebooks///ipynb,book/notebooks///py:percent
#     notebook_metadata_filter: kernelspec,jupytext,-jupytext.text_representation.jupytext_version
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
    import smf_lib.colab

    smf_lib.colab.setup(REPO)

# %%
import matplotlib.pyplot as plt
import pandas as pd
from IPython.display import Markdown, display

from smf_lib import setup_notebook
from smf_lib.methods import ORDER
from smf_lib.paired_stats import mcnemar
from smf_lib.plotting import plot_deltas, plot_frontier, plot_paths, plot_tradeoff
from smf_lib.results import delta_table, load_results, verdicts

SEED = 0
device = setup_notebook(SEED)
pd.set_option("display.max_colwidth", None)  # lists of metrics in full
folder, summary, runs = load_results("cpu")
summary = summary[summary["method"].isin(ORDER)]  # the grid's methods
runs = [r for r in runs if r["method"] in ORDER]
runs.sort(key=lambda r: (ORDER.index(r["method"]), str(r["seed"])))
base = next(r for r in runs if r["method"] == "base")
sizes = {k: v for k, v in base["data"].items() if k.endswith(("_n", "_lines"))}
print("evaluation items:", ", ".join(f"{k} {v}" for k, v in sizes.items()))

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
table.round(2).round({m: 1 for m in accuracies}).rename(columns=names)

# %% [markdown]
# ## Changes against the base model
# One cell per run and metric: the change $\Delta$ and its paired 95% interval $[\text{lo}, \text{hi}]$, rounded
# to what the interval's width supports ({py:func}`~smf_lib.results.delta_table`), in three groups: what was
# learned, general text, and chat and world knowledge. Accuracies are in points; a group the study has no
# metric for is left out.

# %%
groups = {"learning": ("medmcqa_acc", "medmcqa_gold_loglik",
                       "acquisition_acc"),
          "general text": ("wikitext_ppl", "wikitext_drift_kl"),
          "chat and world knowledge": ("chat_drift_kl", "chat_loglik",
                                       "triviaqa_alias_loglik")}
for name, metrics in groups.items():
    table = delta_table(summary, metrics).set_index(["method", "seed"])
    if len(table.columns):
        display(Markdown(f"**{name}**"), table)

# %%
plot_deltas(summary, [m for metrics in groups.values() for m in metrics])
plt.show()

# %% [markdown]
# ## Learning against forgetting
# Each method's MedMCQA change (x) against its change on a forgetting probe (y), with both intervals. The
# labels above each plot say which way is better: further right learned more; on the forgetting axis, the
# better direction depends on the probe (perplexity and drift should go down, log-likelihoods up).

# %%
candidates = ("chat_drift_kl", "wikitext_ppl", "triviaqa_alias_loglik")
forgetting = [m for m in candidates if f"d_{m}" in summary][:2]
fig, axes = plt.subplots(1, len(forgetting), squeeze=False,
                         figsize=(4.3 * len(forgetting), 3.8))
for k, (ax, m) in enumerate(zip(axes.flat, forgetting)):
    plot_tradeoff(summary, m, ax=ax)
    if k:
        ax.get_legend().remove()
fig.tight_layout()
plt.show()

# %% [markdown]
# When the study records cheap probes along training (`trajectories.csv`), the next cell draws each method's
# path from its start to its end, and the end point of every learning rate tried: at matched learning, the
# lower curve forgot less ({py:func}`~smf_lib.plotting.plot_paths`, {py:func}`~smf_lib.plotting.plot_frontier`).

# %%
if (folder / "trajectories.csv").exists():
    trajectories = pd.read_csv(folder / "trajectories.csv")
    fig, axes = plt.subplots(1, 2, figsize=(8.6, 3.8))
    plot_paths(trajectories, ax=axes[0])
    plot_frontier(trajectories, ax=axes[1])
    fig.tight_layout()
    plt.show()

# %% [markdown]
# ## Paired tests on MedMCQA
# McNemar's test looks only at the questions on which the two models disagree: $b$ questions the tuned model
# newly gets right and $c$ it newly gets wrong. If training changed nothing, each such question would go either
# way with probability 1/2, so the exact two-sided p-value comes from a binomial distribution with $b + c$ trials
# ({py:func}`~smf_lib.paired_stats.mcnemar`).

# %%
correct = base["items"]["medmcqa_correct"]
tests = [{"method": r["method"], "seed": r["seed"],
          **mcnemar(correct, r["items"]["medmcqa_correct"])}
         for r in runs if r["method"] != "base"]
labels = {"gained": "newly right (b)", "lost": "newly wrong (c)"}
pd.DataFrame(tests).set_index(["method", "seed"]).rename(columns=labels).round(2)

# %% [markdown]
# ## What the intervals support
# For each run, the metrics whose paired 95% interval lies entirely on the better side, those whose interval
# crosses zero, and those whose interval lies entirely on the worse side ({py:func}`~smf_lib.results.verdicts`).
# It is computed from the results; none of it is typed in by hand.

# %%
long = verdicts(summary).melt(["method", "seed"], var_name="metric").dropna()
long["metric"] = long["metric"].str.replace("_", " ")
grouped = long.groupby(["method", "seed", "value"], sort=False)["metric"]
table = grouped.agg(", ".join).unstack("value", fill_value="")
table = table.reindex(columns=["better", "no clear change", "worse"],
                      fill_value="")
table.sort_index(level="method", key=lambda i: i.map(ORDER.index)).rename_axis(
    columns=None)

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
# ## Summary
# - Every probe keeps per-item results, so every change against base is paired, with a bootstrap 95% interval.
# - {py:func}`~smf_lib.results.delta_table` gives one compact cell per run and metric; the verdicts table says
#   which intervals exclude zero, and on which side.
# - MedMCQA accuracy moves little at this scale; the log-likelihood scores, perplexity and drift are the
#   sensitive probes.
#
# ## Exercises
# 1. Recompute one interval with {py:func}`~smf_lib.paired_stats.paired_bootstrap`: `smf-kl` against base on
#    `medmcqa_acc` with `n_boot=10_000` and two other `seed`s. How much do the bounds move?
# 2. Compare `smf-kl` with `lora` directly, with {py:func}`~smf_lib.paired_stats.mcnemar` on their
#    `medmcqa_correct` items. Is either better on MedMCQA at this sample size?
# 3. The `smf-kl` and `smf-tfidf` runs differ only in their selector. In chapter 4's top-t explorer, compare the
#    rows the two select at the study's top-t of 128 on each memory layer: do they differ enough for the two runs
#    to differ on the probes above?
