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
# # 4. KL versus TF-IDF: which rows get trained
#
# [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/smf-lib/smf_lib/blob/main/notebooks/04_kl_vs_tfidf.ipynb)
#
# **In this chapter you will**
#
# - score the value rows that a task batch reads with four selectors (KL, TF-IDF, TF and random), against the
#   background statistics;
# - see which rows KL and TF-IDF pick, and how their picks differ on hub rows;
# - measure how the two selections overlap as top-t grows;
# - explore the selection yourself with a top-t slider.

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

import matplotlib.pyplot as plt

from smf_lib.probes import metrics as probe_metrics
from smf_lib.study.findings import NAMES, selector_answer, selectors_apart
from smf_lib.views.notebook import found_box, setup_notebook
from smf_lib.views.plotting import Panels, plot_overlap, plot_selection
from smf_lib.views.selection_tables import load_snapshot, scores_table, selection_overlap
from smf_lib.study.results import delta_table, load_results
from smf_lib.views.tables import book_table
from smf_lib.views.widgets import selection_explorer

SEED = 0
device = setup_notebook(SEED)
folder, summary, runs = load_results("cpu-v2")
counts, stats, snap = load_snapshot(folder / "selection_counts.json")
compared = ("medmcqa_gold_loglik", "wikitext_ppl", "chat_drift_kl", "triviaqa_alias_loglik")
selectors = summary[summary["method"].isin(["smf-kl", "smf-tfidf"])]

# %% tags=["hide-input"]
found_box([selector_answer(selection_overlap(counts, stats, [128], layers=snap["layers"]),
                           selectors_apart(selectors, compared))], title="In one sentence")

# %% [markdown]
# ## The four selectors
# For one memory layer and one batch, let $c_i$ be the number of times the batch's tokens read slot $i$ (its
# {term}`read count`) and $C = \sum_i c_i$ the batch's reads in all; $p_i = c_i / C$ is the share of the batch's
# reads that go to slot $i$. Only read slots ($c_i > 0$) may be chosen. The {term}`background statistics` of
# chapter 2 add, for the same layer: $B$, the number of background documents; $df_i$, how many of them read slot
# $i$ at least once; and $A_i$, how often they read it in total. The selectors score every read slot:
#
# - **TF-IDF**: $\;p_i \ln\frac{B+1}{df_i+1}$. The logarithm is small for a row that many background documents
#   read, so such rows are down-weighted; the $+1$ terms keep it finite for a row that no document read.
# - **KL**: $\;p_i \ln\frac{p_i + 10^{-8}}{q_i + 10^{-8}}$, where $q_i = (A_i+1)/\sum_j (A_j+1)$ is the
#   background's share of reads that go to slot $i$ (smoothed by one read per slot). The scores sum to
#   $\mathrm{KL}(p\,\|\,q)$, so a row scores high when the batch reads it far more than general text does,
#   weighted by how much the batch reads it.
# - **TF**, an ablation: $p_i$ alone, the batch's share of reads, with no background at all.
# - **random**, an ablation: a uniformly random subset of the read rows.
#
# Each selector keeps the {term}`top-t` read rows by score (all read rows when fewer than $t$ were read). TF-IDF
# only sees *whether* a background document read a row; KL sees *how much*. The two therefore differ most on
# **{term}`hub rows <hub row>`**, the rows that more than half of the background documents read.
#
# The read counts below come from `selection_counts.json` in the study's results folder: the reads of the first four
# training batches and the background statistics of the study's retrofitted memory.
# `python -m smf_lib snapshot --preset cpu-v2 --out results/cpu-v2` writes it (from the study's retrofit stage, or
# retrofitting again where that stage is gone). The memory is the living one of chapter 3's study:

# %%
print(f"read counts of {snap['batch_texts']} MedMCQA training texts; "
      f"background: {stats.n_docs} documents")
print(f"N = {snap['n_slots']:,} slots at each memory layer {snap['layers']}")
for j, layer in enumerate(snap["layers"]):
    hub = int((stats.df[j] > stats.n_docs / 2).sum())
    print(f"layer {layer}: {int((counts[j] > 0).sum()):,} rows read by the batch, "
          f"{hub:,} hub rows")

# %% [markdown]
# ## One selection, step by step
# A sparse step starts from the batch's reads. For each row of a memory layer it compares the share of the batch's
# reads that fall on the row ($p_i$) with the share of general text's reads ($q_i$, from the background
# statistics), scores the row (KL below: $p_i \ln(p_i / q_i)$), and trains only the $t$ rows with the highest
# scores; the masked update leaves every other row bit-identical. Drawn for the running example, the question on
# axonal transport that chapters 1 to 3 follow, as if it were a training batch of its own: the rows it reads most at
# one memory layer, each step in its own panel:

# %%
import torch

from smf_lib.study.presets import get_preset
from smf_lib.views.diagrams import plot_selection_steps

example = [torch.tensor(c) for c in snap["example"]["counts"]]
shown, top_t = 24, get_preset("cpu-v2").train["top_t"]
print(f"memory layer {snap['layers'][1]}: the {shown} rows the running example reads most (of "
      f"{int((example[1] > 0).sum()):,} it reads); top-t {top_t}")
Panels([plot_selection_steps(example[1], stats.df[1], stats.totals[1], stats.n_docs, top_t, rows=shown)])

# %%
most = example[1].argsort(descending=True)[:shown]
hubs = int((stats.df[1][most] > stats.n_docs / 2).sum())
print(textwrap.fill(f"{hubs} of these {shown} rows are hub rows, read by more than half of the {stats.n_docs} "
                    "general documents: in this memory (the cpu-v2 study's, whose reads had collapsed) the score can "
                    "only pick rows the question reads a little more than general text does. A question that reads "
                    "rows of its own would show rows with a small q and a large score (chapter 7 draws one).", 76))

# %% [markdown]
# ## The rows each selector picks
# Each dot is a row that the task batch read: its share of the task's reads against its share of the
# background's reads. Rows above the diagonal are read more by the task than by general text.

# %%
layer, label = 1, snap["layers"][1]  # memory layer 15
panels = [plot_selection(counts, stats, layer, 128, selector, label=label,
                         ax=plt.subplots(figsize=(4.6, 3.8))[1])
          for selector in ("kl", "tfidf")]
for ax in panels:
    ax.figure.tight_layout()
Panels(panels)

# %%
book_table(scores_table(counts, stats, layer=1, top_t=10), key=["kl slot"])

# %% [markdown]
# ## Overlap and hub rows across top-t
# At small t the two selectors disagree most. As t grows toward the number of rows read, both selections
# tend to the same set.

# %%
ts = [8, 16, 32, 64, 128, 256, 512, 1024]
overlap = selection_overlap(counts, stats, ts, layers=snap["layers"])
Panels(plot_overlap(overlap, split=True))

# %% [markdown]
# Why does KL take so many hub rows at small t? TF-IDF's weight $\ln\frac{B+1}{df_i+1}$ is near zero for a row that
# most background documents read, however often the batch reads it. KL's score asks only whether the batch reads a
# row *more, in share,* than general text does, so a hub row the task reads heavily still ranks high. The numbers,
# at the smallest and a middle t:

# %%
for t in (ts[0], 128):
    at = overlap[overlap["top_t"] == t]
    print(textwrap.fill(f"top-t {t}: hub rows among KL's picks {at['kl_hub_share'].mean():.0%} and among "
                        f"TF-IDF's {at['tfidf_hub_share'].mean():.0%} (mean over the memory layers); the two "
                        f"selections share {at['jaccard'].mean():.0%} of their rows (Jaccard)", 76))

# %% [markdown]
# So the answer to "which rows does each selector train" is: KL trains rows that the task reads more than
# general text, hubs included; TF-IDF takes fewer hubs. An update to a hub row changes what most general text reads,
# so KL's choice is the one more exposed to interference, and the next section asks whether that shows up as
# forgetting.
#
# ## The running example's rows
# The question on axonal transport that chapters 1 to 3 follow is never trained on. Which of its rows would each
# selector train? The table answers two ways, at the study's top-t: were the question a batch by itself (its own
# reads, scored against the background), how many rows each selector picks, what share of the question's reads
# those rows carry, and how many of them are hub rows; and how many of the question's rows are among the rows each
# selector picks for the training batches above ({py:func}`~smf_lib.views.selection_tables.example_selection`).
# The memory here is the `cpu-v2` study's, whose retrofit trained the addressing and collapsed the reads onto a
# small set of hub rows per layer (chapter 2), so the question reads far fewer distinct rows than in chapters 1 and 2.

# %%
from smf_lib.views.selection_tables import example_selection

picks = example_selection(example, counts, stats, top_t, layers=snap["layers"])
shares = [c for c in picks if "share" in c]
picks[shares] = (100 * picks[shares]).round(0)
book_table(picks.rename(columns={c: f"{c} (%)" for c in shares}), key=["layer"])

# %%
kl_share = picks["KL share of its reads"].mean()
tf_share = picks["TF-IDF share of its reads"].mean()
print(textwrap.fill(
    f"At top-t {top_t}, KL's picks carry {kl_share:.0f}% of the question's reads and "
    f"TF-IDF's {tf_share:.0f}% (mean over the layers): KL trains the rows this question "
    f"leans on, hubs included; TF-IDF leans toward its rarer rows.", 76))

# %% [markdown]
# ## Try it: a top-t slider
# The explorer opens on the first selection figure above (KL): memory layer 15, t = 128. Move the slider, or
# pick another selector or memory layer. In Jupyter or Colab (the badge at the top), it recomputes the
# selection from the stored read counts for any t from 1 to 1,024. This web page has no kernel, so here it
# switches between figures drawn when the book was built, for t = 16, 32, ..., 1,024.

# %%
selection_explorer(counts, stats, layers=snap["layers"], layer=1, selector="kl", top_t=128,
                   max_t=snap["n_slots"] // 4)

# %% [markdown]
# ## Did the selector matter for forgetting?
# The `smf-kl` and `smf-tfidf` runs of a study differ in the selector and in the rate each was given so that it
# comes closest to the baselines' learning on dev items (the `lr` column). Their changes against the base model, with
# paired 95% intervals (chapter 3 explains the table), from the living-memory study (`results/cpu-v2`):

# %%
book_table(delta_table(selectors, compared), key=["method", "lr", "seed"])

# %% [markdown]
# The answer, seed by seed: for each probe, do the two selectors' intervals overlap (the study cannot tell them
# apart) or not?

# %%
labels = probe_metrics()
for seed, apart in selectors_apart(selectors, compared).items():
    print(textwrap.fill(f"seed {seed}: " + (
        "the intervals overlap on every probe: this study cannot tell the selectors apart on learning or "
        "forgetting" if not apart else "the intervals are apart on " + ", ".join(
            f"{labels[m].label} ({NAMES[w]} did better)" for m, w in apart) + "; they overlap on the rest"), 76))

# %% [markdown]
# :::{admonition} What this chapter shows, and what it does not
# :class: note
# **It shows** which value rows KL and TF-IDF select on real MedMCQA batches of the study's retrofitted memory,
# how far the two selections overlap as top-t grows, and how each treats the hub rows, together with what the two
# selectors' study runs changed on the probes, with intervals.
#
# **It does not show** that one selector forgets less than the other in general. The runs differ in the selector
# and its rate, on one small model, one task, one top-t and two seeds; where the two runs' intervals overlap, this study
# cannot tell them apart. The read counts come from a few batches, not from every step of training.
# :::
#
# ## Summary
# - A selector scores each read row from the batch's share of reads $p_i$ and, for KL and TF-IDF, from the
#   background statistics: TF-IDF from document frequencies $df_i$, KL from total reads $A_i$.
# - TF-IDF down-weights any row that many documents read; KL asks whether the batch reads a row more than
#   general text does, so the two disagree most on hub rows and at small top-t.
# - As top-t approaches the number of rows read, every selector picks nearly the same set.
#
# ## Exercises
# 1. (reading only) In the explorer, choose memory layer 7 and KL, and move top-t from 16 to 1,024. From which t
#    on do the selected rows include rows below the diagonal (read more by general text than by the task)? Repeat
#    with TF-IDF.
#
#    :::{dropdown} Hint
#    Below the diagonal $p_i < q_i$. What sign does the KL score take there, and what does the TF-IDF score look at
#    instead?
#    :::
#
#    :::{dropdown} Solution
#    KL: only once t passes the number of read rows above the diagonal. Its score is negative below the diagonal,
#    so it takes such a row only after every read row above it. TF-IDF: much earlier. Its score is positive for any
#    read row that some background document did not read, and it sees only whether a document read a row, not how
#    often: a row that few documents read, but read many times, can lie below the diagonal and still score well.
#    Count both from the stored reads:
#
#    ```python
#    j = 0  # memory layer 7
#    p = counts[j] / counts[j].sum()
#    q = (stats.totals[j] + 1) / (stats.totals[j] + 1).sum()
#    print("rows above the diagonal:", int(((counts[j] > 0) & (p > q)).sum()))
#    for t in (16, 32, 64, 128, 256, 512, 1024):
#        below = {s: int((p[r] < q[r]).sum()) for s, r in
#                 (("kl", select_for_layers(counts, "kl", t, stats)[j]),
#                  ("tfidf", select_for_layers(counts, "tfidf", t, stats)[j]))}
#        print(t, below)
#    ```
#
#    (`from smf_lib.selection import select_for_layers` first.)
#    :::
#
# 2. (reading only) Still in the explorer, at t = 128, switch between `tf` and `random`. Where do their picks lie
#    compared with KL's, and what does that say about what the background statistics add?
#
#    :::{dropdown} Hint
#    TF scores a row by the batch's share of reads $p_i$ alone; random scores it by nothing.
#    :::
#
#    :::{dropdown} Solution
#    TF's picks sit at the top of the cloud, the rows the batch reads most. Many of them are hub rows to the right,
#    and a good part lie on or below the diagonal, because the rows a batch reads most are often the rows that all
#    text reads most. Random's picks are scattered over the whole cloud, below the diagonal about as often as
#    above. KL's all lie above it. The background statistics turn "read most" into "read more than general text
#    does": without them a selector chases the rows that everything reads (TF) or nothing in particular (random).
#    :::
#
# 3. (CPU, about 1 minute) Before counting, predict from the two formulas at the top of the chapter which selection
#    holds more hub rows. Then, with {py:func}`~smf_lib.selection.select_for_layers`, select 128 rows per layer
#    with `"kl"` and with `"tfidf"`, and count how many of each selection are hub rows
#    (`stats.df[j] > stats.n_docs / 2`). Compare your counts with the hub-share figure (the second overlap figure).
#
#    :::{dropdown} Hint
#    For a hub row $df_i > B/2$: how large can TF-IDF's logarithm be then? KL's logarithm compares $p_i$ with $q_i$
#    instead.
#    :::
#
#    :::{dropdown} Solution
#    ```python
#    from smf_lib.selection import select_for_layers
#
#    for name in ("kl", "tfidf"):
#        chosen = select_for_layers(counts, name, 128, stats)
#        hubs = [int((stats.df[j] > stats.n_docs / 2)[rows].sum()) for j, rows in enumerate(chosen)]
#        print(name, dict(zip(snap["layers"], hubs)))
#    ```
#
#    KL's selection holds more hub rows than TF-IDF's at every layer. For a hub row, TF-IDF's logarithm
#    $\ln\frac{B+1}{df_i+1}$ is below $\ln 2$ however much the batch reads it, while KL's logarithm stays large for
#    a hub row that the batch reads many times more than the background does. Divided by 128, the counts are
#    exactly the hub shares the figure plots at t = 128: {py:func}`~smf_lib.views.selection_tables.selection_overlap`,
#    which computes them, makes the same selections.
#    :::
