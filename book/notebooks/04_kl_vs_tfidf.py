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
# # 4. KL versus TF-IDF: which rows get trained
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/04_kl_vs_tfidf.ipynb)
#
# For one memory layer and one batch, let $c_i$ be the number of reads of slot $i$ and $C = \sum_i c_i$. Only
# read slots may be chosen. The two selectors score them against the background statistics:
#
# - **TF-IDF**: $\;(c_i / C)\,\ln\frac{B+1}{df_i+1}$, which down-weights rows that many background documents read;
# - **KL**: $\;p_i \ln\frac{p_i + 10^{-8}}{q_i + 10^{-8}}$ with $p_i = c_i/C$ and
#   $q_i = (A_i+1)/\sum_j (A_j+1)$. The scores sum to $\mathrm{KL}(p\,\|\,q)$, so a row scores high when the
#   batch reads it far more than general text does, weighted by how much the batch reads it.
#
# TF-IDF only sees *whether* a document read a row. KL sees *how much*. The two therefore differ most on
# **hub rows**, the rows that almost every document touches.

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
from smf_lib.experiments import load_results
from smf_lib.plotting import load_snapshot, plot_overlap, plot_selection, scores_table, selection_overlap
from smf_lib.widgets import selection_explorer

SEED = 0
device = setup_notebook(SEED)
folder, summary, runs = load_results("cpu")
counts, stats, snap = load_snapshot(folder / "selection_counts.json")
print(f"read counts of {snap['batch_texts']} MedMCQA training texts at memory layers {snap['layers']}; "
      f"background: {stats.n_docs} documents; N = {snap['n_slots']} slots per layer")
for j, layer in enumerate(snap["layers"]):
    print(f"layer {layer}: {int((counts[j] > 0).sum())} rows read by the batch, "
          f"{int((stats.df[j] > stats.n_docs / 2).sum())} hub rows (read by > half the documents)")

# %% [markdown]
# ## The rows each selector picks
# Each dot is a row that the task batch read: its share of the task's reads against its share of the
# background's reads. Rows above the diagonal are read more by the task than by general text.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
plot_selection(counts, stats, 1, 128, "kl", ax=axes[0], label=snap["layers"][1])
plot_selection(counts, stats, 1, 128, "tfidf", ax=axes[1], label=snap["layers"][1])
fig.tight_layout()

# %%
scores_table(counts, stats, layer=1, top_t=10)

# %% [markdown]
# ## Overlap and hub rows across top-t
# At small t the two selectors disagree most. As t grows toward the number of rows read, both selections
# tend to the same set.

# %%
overlap = selection_overlap(counts, stats, [8, 16, 32, 64, 128, 256, 512, 1024], layers=snap["layers"])
plot_overlap(overlap)
plt.show()

# %% [markdown]
# ## Try it: a top-t slider
# The explorer opens on the left panel of the first figure: memory layer 15, KL, t = 128. Move the slider, or
# pick another selector or memory layer. In Jupyter or Colab (the badge at the top), it recomputes the
# selection from the stored read counts for any t from 1 to 1,024. This web page has no kernel, so here it
# switches between figures drawn when the book was built, for t = 16, 32, ..., 1,024.

# %%
selection_explorer(counts, stats, layers=snap["layers"], layer=1, selector="kl", top_t=128,
                   max_t=snap["n_slots"] // 4)

# %% [markdown]
# ## Did the selector matter for forgetting?
# The `smf-kl` and `smf-tfidf` runs differ only in the selector.

# %%
cols = ["method", "d_medmcqa_acc", "d_medmcqa_gold_loglik", "d_wikitext_ppl", "d_triviaqa_alias_loglik"]
summary[summary["method"].isin(["smf-kl", "smf-tfidf"])][cols].round(4)
