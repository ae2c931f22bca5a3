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
# Every model is evaluated with the same three protocols (METHOD.md section 6):
#
# - **MedMCQA** (what we teach): each option continuation `" {L}. {text}"` is scored by its mean per-token
#   log-likelihood after the prompt; the argmax is the answer. The letter score (log-likelihood of " A"..." D")
#   is kept too.
# - **WikiText perplexity** (general language): a sliding window of 1,024 tokens with stride 512, scoring only
#   each window's new tokens.
# - **TriviaQA** (world knowledge): greedy 32 tokens, correct if a normalised alias is contained. Because a 135M
#   model answers only a few percent of the questions, we also report a **retention score**: the mean
#   log-likelihood of the first gold alias. It moves before accuracy does.
#
# Each probe keeps per-item results. Every delta to base is therefore **paired**: the same items are
# resampled for both models (bootstrap, 2,000 resamples), and MedMCQA also gets an exact McNemar test.

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

from smf_lib import setup_notebook
from smf_lib.results import load_results
from smf_lib.plotting import plot_deltas, plot_tradeoff
from smf_lib.paired_stats import mcnemar
from smf_lib.results import verdicts

SEED = 0
device = setup_notebook(SEED)
folder, summary, runs = load_results("cpu")
base = next(r for r in runs if r["method"] == "base")
print(f"results from {folder.name}: MedMCQA n={base['data']['medmcqa_n']}, TriviaQA n={base['data']['triviaqa_n']}, "
      f"WikiText {base['metrics']['wikitext_tokens']} tokens")

# %% [markdown]
# ## The table
# `summary.csv` has one row per method and seed. `d_*` columns are deltas to base, and `_lo`/`_hi` give the
# paired-bootstrap 95% interval. The MedMCQA majority-answer baseline (always answering the most common
# letter) is shown next to the accuracy.

# %%
show = ["method", "selector", "medmcqa_acc", "medmcqa_majority_acc", "d_medmcqa_acc", "d_medmcqa_acc_lo",
        "d_medmcqa_acc_hi", "wikitext_ppl", "d_wikitext_ppl", "d_wikitext_ppl_lo", "d_wikitext_ppl_hi",
        "triviaqa_acc", "d_triviaqa_alias_loglik", "d_triviaqa_alias_loglik_lo", "d_triviaqa_alias_loglik_hi"]
summary[show].round(4)

# %%
plot_deltas(summary, ("medmcqa_acc", "medmcqa_gold_loglik", "wikitext_ppl", "triviaqa_alias_loglik"))
plt.show()

# %% [markdown]
# ## Learning against forgetting
# A method is better when its point sits further to the right (more learned) and closer to zero on the
# forgetting axis.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plot_tradeoff(summary, "wikitext_ppl", ax=axes[0])
plot_tradeoff(summary, "triviaqa_alias_loglik", ax=axes[1])
axes[1].get_legend().remove()
fig.tight_layout()

# %% [markdown]
# ## Paired tests on MedMCQA
# How many questions each method newly got right, and newly got wrong, relative to base, with the exact
# McNemar p-value.

# %%
for r in runs:
    if r["method"] != "base":
        t = mcnemar(base["items"]["medmcqa_correct"], r["items"]["medmcqa_correct"])
        print(f"{r['method']:>17}: +{t['gained']:3d} / -{t['lost']:3d}  p = {t['p']:.3f}")

# %% [markdown]
# ## What the intervals support
# For each method and probe, this table states whether the paired 95% interval lies entirely on the
# better side, entirely on the worse side, or crosses zero. It is computed from the table above; none of it
# is typed in by hand.

# %%
verdicts(summary)

# %% [markdown]
# **Reading these numbers.** This is one seed of a 135M model that sits near chance on MedMCQA, with a
# few hundred evaluation items. A MedMCQA delta whose interval crosses zero is not a gain. Perplexity and the
# TriviaQA retention score are far more sensitive, so forgetting shows up there first. The paper's
# claim (SMF learns a little while staying within about a point on the probes, and LoRA and full finetuning
# learn more and drift more) can only be checked in its direction here. Chapter 5 explains how to run the
# paper's setting.
#
# In the committed run, no method moves the forgetting probes in the harmful direction beyond its interval:
# the perplexity and retention deltas are either inside their intervals or improvements. A likely reason is
# that this is an *instruct* model. Plain-text training on MedMCQA makes it a better plain-text predictor
# in general, and at this scale (75 steps on 1,200 questions) that outweighs any forgetting. The table
# above is what to read, and it is regenerated whenever `results/cpu` is.
