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
# # Sparse Memory Finetuning
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/00_intro.ipynb)
#
# Finetuning a language model on a new task tends to overwrite what it already knew (*catastrophic
# forgetting*). LoRA limits how many parameters change, but every low-rank update still touches every
# input. **Sparse Memory Finetuning** (SMF) takes a different route. It adds a large key-value **memory
# layer** to the model, where each token reads only a few of many value rows. For the new task, it then
# trains only the rows that the task reads far more often than general text does. Knowledge stored elsewhere
# is left alone.
#
# This book builds the method with `smf_lib` and compares it with LoRA and full finetuning on
# MedMCQA (the task), WikiText perplexity and TriviaQA (what the model should not forget):
#
# 1. the memory layer: product keys, identity at insertion, what one token reads;
# 2. training: retrofit, background statistics, sparse steps, LoRA and full finetuning;
# 3. the forgetting probes, with paired confidence intervals;
# 4. KL versus TF-IDF row selection, with a live top-t slider;
# 5. reproducing the paper's Qwen2.5-0.5B setting in Colab;
# 6. speed and memory, side by side.
#
# The method follows Gupta et al. 2026 (arXiv 2605.03229), Lin et al. 2025 (arXiv 2510.15103), Berges et
# al. 2024 (arXiv 2412.09764) and Lample et al. 2019 (arXiv 1907.05242). The project's departures from that
# paper are listed where they apply.

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
from smf_lib.plotting import plot_tradeoff

SEED = 0
device = setup_notebook(SEED)

# %% [markdown]
# ## The headline result on the offline default model
# The numbers below come from `python -m smf_lib run --preset cpu`. That is SmolLM2-135M-Instruct on 2 CPU
# cores, 1 seed, the first 1,200 of the 2,650 MedMCQA training questions available offline, and evaluation
# subsets (MedMCQA 300, TriviaQA 200, WikiText 120 lines). The files are committed in `results/cpu/`; the
# chapter loads them and does not retrain. Each point is one method's change relative to the base model. The
# bars are paired-bootstrap 95% intervals over the same probe items.

# %%
folder, summary, runs = load_results("cpu")
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plot_tradeoff(summary, "wikitext_ppl", ax=axes[0])
plot_tradeoff(summary, "triviaqa_alias_loglik", ax=axes[1])
axes[1].get_legend().remove()
fig.tight_layout()

# %%
cols = ["method", "selector", "medmcqa_acc", "medmcqa_majority_acc", "wikitext_ppl", "triviaqa_acc",
        "triviaqa_alias_loglik"]
summary[cols].round(4)

# %% [markdown]
# The model is small and near chance on MedMCQA; the majority-answer baseline is shown next to its
# accuracy. Effects on the task are therefore small, and chapter 3 reads them together with their
# intervals. The direction to check is the paper's: does SMF move the forgetting probes less than LoRA and
# full finetuning do, for what it learns?
